#!/usr/bin/env bash
# Builds the custom op libraries with Bazel, offline, on a fresh machine:
#   bazel-bin/custom_ops/_custom_ops.so        CPU kernels
#   bazel-bin/custom_ops/_custom_ops_cuda.so   CPU + CUDA kernels (when a CUDA toolkit is found)
#
#   custom_ops/build.sh                       # PYTHON defaults to .venv/bin/python
#   PYTHON=/path/to/python TF_DISTILL_CUDA=yes custom_ops/build.sh
#
# Environment:
#   PYTHON            interpreter whose TensorFlow the ops are built against (.venv/bin/python)
#   TF_DISTILL_CUDA   auto (default: CUDA library when nvcc is found), yes (fail without), no
#   TF_DISTILL_CUDA_ARCHS   SM versions for nvcc, default 75,80,86,89,90
# Installs Debian's bazel-bootstrap with apt-get when `bazel` is missing (needs root or sudo).
# Without Bazel, `python custom_ops/build_without_bazel.py [--cuda auto|yes|no]` builds the same
# libraries with g++/nvcc from the same sources and flags (custom_ops/build_config.bzl) into
# tf_distill/ops/, where the loader also looks.
# Exits non-zero when anything fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-.venv/bin/python}"
CUDA_MODE="${TF_DISTILL_CUDA:-auto}"

log() { echo "custom_ops/build.sh: $*" >&2; }

if ! command -v "$PYTHON" >/dev/null 2>&1 && [ ! -x "$PYTHON" ]; then
  log "python interpreter '$PYTHON' not found; set PYTHON to the venv's python"
  exit 1
fi

if ! command -v bazel >/dev/null 2>&1; then
  log "bazel not found: installing Debian's bazel-bootstrap with apt-get"
  SUDO=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else log "not root and no sudo: install bazel-bootstrap yourself"; exit 1; fi
  fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y bazel-bootstrap
  command -v bazel >/dev/null 2>&1 || { log "bazel still missing after installing bazel-bootstrap"; exit 1; }
fi

"$PYTHON" configure.py --cuda "$CUDA_MODE"

targets=("//custom_ops:_custom_ops.so")
if grep -q '^build --repo_env=TF_DISTILL_CUDA_PATH=.' .bazelrc; then
  targets+=("//custom_ops:_custom_ops_cuda.so")
fi

# bazel-bootstrap 4.2.3 cannot download anything here; the WORKSPACE only uses local
# repositories. The server exits after 5 idle minutes so CI jobs do not keep it around.
bazel --max_idle_secs=300 build "${targets[@]}"

for target in "${targets[@]}"; do
  lib="bazel-bin/custom_ops/${target##*:}"
  [ -f "$lib" ] || { log "expected $lib after the build"; exit 1; }
  log "built $lib"
done
