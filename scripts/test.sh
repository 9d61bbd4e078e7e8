#!/usr/bin/env bash
# Sets up .venv with the test references and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python -m pytest -q "$@"
