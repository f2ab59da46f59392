#!/usr/bin/env bash
# Set-up + the whole test suite (what CI runs): bash tools/run_tests.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
# -n auto: one pytest-xdist worker per CPU core (the suite is CPU-bound; many tests start TF subprocesses);
# --dist loadscope: a test class stays on one worker, so its setUpClass (a subprocess, a trained graph) runs once.
exec "${PYTHON:-python3}" -m pytest tests -q -p no:cacheprovider -n auto --dist loadscope "$@"
