#!/usr/bin/env bash
# Set up, then run the whole test suite (CPU only; starts and stops its own Ray instances).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two pytest-xdist workers: the modules that start Ray (xdist_group "ray") run in one of them, in
# turn; the Ray-free tests fill the other (and the first, between), using the CPU that the Ray
# tests leave idle while they wait on Ray's controller and worker starts.
exec .venv/bin/python -m pytest -q -n 2 --dist loadgroup tests "$@"
