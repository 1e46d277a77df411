#!/usr/bin/env bash
# Create (or refresh) .venv with the exact pins of requirements.txt, mmcv 1.7.2 (mmcv 1.x "lite":
# pure Python, no compiled ops; raydet serves them) and raydet installed editable.
# Re-running is cheap: nothing is installed when requirements.txt and this script have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.raydet-requirements
want=$(cat requirements.txt scripts/setup.sh)
if [ ! -x .venv/bin/python ] || [ "$want" != "$(cat "$stamp" 2>/dev/null)" ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # mmcv-lite 2.x / mmengine (earlier pins) provide a second `mmcv`: they must not stay beside 1.x
  .venv/bin/python -m pip uninstall -q -y mmcv-lite mmengine >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -r requirements.txt
  # mmcv 1.7.2's setup.py imports pkg_resources, which setuptools >= 81 no longer has: build it
  # in this venv (no isolated build env) with an older setuptools, and without its CUDA/C++ ops
  .venv/bin/python -m pip install -q "setuptools<81" wheel
  MMCV_WITH_OPS=0 .venv/bin/python -m pip install -q --no-deps --no-build-isolation mmcv==1.7.2
  .venv/bin/python -m pip install -q --no-deps -e .
  printf '%s' "$want" > "$stamp"
fi
