#!/usr/bin/env bash
# The main job: set up, then train the default detector (FCOS, tiny GN backbone) on the built-in
# shapes dataset with 2 local Ray workers, and print its bbox mAP. Extra arguments go to
# `raydet train` (e.g. --work-dir DIR, --launcher none, --num-workers 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/raydet train configs/fcos/fcos_gn_tiny_shapes.py "$@"
