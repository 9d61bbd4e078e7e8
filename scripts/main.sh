#!/usr/bin/env bash
# The main job on the built-in default: the paper's model table, and a converted reference
# checkpoint with its sample grid (until the distillation demo lands).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
OUT="${OUT:-out}"
mkdir -p "$OUT"
.venv/bin/tf-distill-stats --config=configs/paper_models.py | tee "$OUT/paper_models.txt"
CKPT="${CKPT:-../shared/fixtures/reference/teacher32_zip.pt}"
.venv/bin/tf-distill-convert --input="$CKPT" --output="$OUT/teacher32" --n_samples=16
.venv/bin/tf-distill-stats --checkpoint="$OUT/teacher32"
