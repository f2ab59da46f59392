#!/usr/bin/env bash
# Set-up + the main job: trains graphs/char_lm.py on its default data (Python's own stdlib sources).
# Extra args go to tools/train.py, e.g. bash tools/run_main.sh --num_epochs=2
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
exec "${PYTHON:-python3}" tools/train.py "$@"
