#!/usr/bin/env bash
# Sets up .venv with the test references, builds the custom ops with Bazel (CPU and CUDA
# libraries; installs Debian's bazel-bootstrap if needed), and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
TF_DISTILL_CUDA="${TF_DISTILL_CUDA:-yes}" custom_ops/build.sh
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python -m pytest -q "$@"
