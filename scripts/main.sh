#!/usr/bin/env bash
# The main job on the built-in default: distill the committed Fashion-MNIST demo teacher into a
# ~4x smaller student (stage 2 with GAN, L1, LPIPS and LD losses), then write the teacher-vs-student
# grid, metrics.json (FID of both, LPIPS student-to-teacher, params/FLOPs) and the student checkpoint
# to out/demo. Extra flags go to tf-distill-demo (e.g. --steps=50 --fid_samples=200).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/tf-distill-stats --config=configs/paper_models.py
.venv/bin/tf-distill-demo --workdir=out/demo "$@"
