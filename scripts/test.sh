#!/usr/bin/env bash
# Set up, then run the whole test suite (CPU only; starts and stops its own Ray instances).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two pytest-xdist workers: test_launch (one shared local Ray instance) runs in one of them, the
# tests that start Ray clusters of their own (test_cloud, test_cluster) in the other, each in turn;
# the Ray-free tests fill both, using the CPU that the Ray tests leave idle while they wait on
# Ray's controller and worker starts.
exec .venv/bin/python -m pytest -q -n 2 --dist loadgroup tests "$@"
