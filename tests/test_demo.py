"""The README's main job (tf-distill-demo) end to end with a reduced step count."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tf_distill.io import checkpoints

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-m", "tf_distill.bin.demo", f"--workdir={tmp_path}", "--steps=3",
                             "--fid_samples=20", "--lpips_samples=8"], capture_output=True, text=True, cwd=REPO,
                            env=env, timeout=1500)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["distill_steps"] == 3 and metrics["fid_samples"] == 20
    assert metrics["fid_teacher"] > 0 and metrics["fid_student"] > 0 and 0 < metrics["lpips_student_to_teacher"] < 2
    assert metrics["teacher"]["params"] == 782_451 and metrics["flops_ratio"] > 3.5
    grid = np.asarray(Image.open(tmp_path / "teacher_vs_student.png"))
    assert grid.shape == (2 + 2 * 34, 2 + 16 * 34, 3) and grid[2:34, 2:34].std() > 5
    student = checkpoints.load_generator(tmp_path / "run" / "final")
    assert student.channels == [64, 64, 64, 64, 32, 32, 16, 16]
