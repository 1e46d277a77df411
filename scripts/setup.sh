#!/usr/bin/env bash
# Create (or refresh) .venv with the exact pins of requirements.txt and raydet installed editable.
# Re-running is cheap: nothing is installed when requirements.txt has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.raydet-requirements
if [ ! -x .venv/bin/python ] || ! cmp -s requirements.txt "$stamp"; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  cp requirements.txt "$stamp"
fi
