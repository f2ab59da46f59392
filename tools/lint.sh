#!/usr/bin/env bash
# The linter and the formatter check (what CI runs before the tests): bash tools/lint.sh
# Fix in place: ruff check --fix . && ruff format .   (config: ruff.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m ruff check .
"$PY" -m ruff format --check .
