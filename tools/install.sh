#!/usr/bin/env bash
# Installs returnn_rc (editable) with its custom op built against the installed TensorFlow.
# TensorFlow: an installed one is kept (e.g. the GPU wheel); else tensorflow-cpu==2.21.0 is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import tensorflow" >/dev/null 2>&1; then
  "$PY" -m pip install -q "tensorflow-cpu==2.21.0"
fi
"$PY" -m pip install -q setuptools wheel
# --no-build-isolation: the op must be compiled against the TensorFlow installed here.
"$PY" -m pip install -q --no-build-isolation -e ".[tests]"
