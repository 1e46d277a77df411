#!/usr/bin/env bash
# Set up, then run the whole test suite (CPU only; starts and stops its own Ray instances).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q tests "$@"
