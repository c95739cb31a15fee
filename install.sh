#!/usr/bin/env bash
# Installs localseek. On a machine without torch it installs the CPU build first (torch==2.13.0),
# so pip never pulls a multi-GB CUDA build; a machine that already has torch (a GPU user's) keeps it.
# Usage: ./install.sh          runtime only
#        ./install.sh test     runtime + test dependencies
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[install] no torch found: installing the CPU build torch==2.13.0"
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
if [ "${1:-}" = "test" ]; then
  "$PY" -m pip install --quiet -e ".[test]"
else
  "$PY" -m pip install --quiet -e .
fi
echo "[install] localseek installed"
