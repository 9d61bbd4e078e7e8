#!/usr/bin/env bash
# Creates or reuses .venv at the repo root and installs tf-distill into it (editable).
# Usage: scripts/setup.sh [--test]   (--test also installs the test-only references: pytest, torch CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
.venv/bin/python -m pip install -q -e ".${extras}" 2>&1 | grep -v "is ignored: it is neither" || true
.venv/bin/python -c "import tf_distill, tensorflow" >/dev/null
