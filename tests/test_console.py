"""A clean console: a training run prints our progress lines, not TensorFlow's internal logs.

The remapper case: with oneDNN on (TensorFlow's default on AVX-512 CPUs) and the reference ops
(what runs when the custom ops are not built, as after scripts/setup.sh), Grappler used to log
``E0000 ... meta_optimizer.cc:967] remapper failed: INVALID_ARGUMENT: Mutation::Apply error:
fanout '.../LeakyReluGrad' exist for missing node '.../activate/add'`` at every trace of a GAN
step (see tf_distill.ops.fused_bias_act._leaky_relu). The run forces both so that any CPU shows it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from train_helper import write_random_images

REPO = Path(__file__).resolve().parents[1]
TF_LOG_LINE = re.compile(r"^[EWIF]\d{4} ")  # absl / TensorFlow C++ log prefix, e.g. "E0000 00:00:17..."


@pytest.mark.slow
def test_training_console_has_no_tensorflow_internals(tmp_path):
    data = write_random_images(tmp_path / "images", 8, 32)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_CPP_VMODULE")}
    env.update(PYTHONPATH=str(REPO), TF_ENABLE_ONEDNN_OPTS="1", TF_DISTILL_OPS_IMPL="ref")
    # One step of the demo distillation with every part on: D step with R1, G step with GAN, L1,
    # LPIPS and relation losses, path length regularization, EMA, checkpoint, samples, final/.
    result = subprocess.run(
        [sys.executable, "-m", "tf_distill.bin.train", f"--config={REPO / 'configs' / 'demo_distill.py'}",
         f"--workdir={tmp_path / 'run'}", f"--config.data.source=folder:{data}", "--config.train.steps=1",
         "--config.kd.warmup_steps=0", "--config.log.every=1"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    assert "[train] step 1/1" in result.stdout and "r1=" in result.stdout and "kd_lpips=" in result.stdout
    assert "remapper failed" not in console
    # Nor "E0000 ... util.cc:131] oneDNN supports DT_INT32 only on platforms with AVX-512" (any CPU with oneDNN
    # on, at the GAN step's first int32 transpose: cli.import_tensorflow logs it where it is filtered).
    internals = [line for line in console.splitlines() if TF_LOG_LINE.match(line)]
    assert not internals, "\n".join(internals)


def test_progress_lines_with_known_and_unknown_totals():
    import io  # pylint: disable=import-outside-toplevel

    from tf_distill.progress import Progress  # pylint: disable=import-outside-toplevel

    known, unknown = io.StringIO(), io.StringIO()
    bar = Progress(4, "FID", interval=1e9, stream=known)
    for _ in range(4):
        bar(1)
    assert known.getvalue().splitlines()[0].startswith("[FID] 1/4  25.0% ")  # the first update prints
    assert known.getvalue().splitlines()[-1].startswith("[FID] 4/4 100.0% ") and "ETA 0:00" in known.getvalue()
    counter = Progress(None, "real", interval=0.0, stream=unknown)  # all images of a folder: no total
    counter(3)
    counter(2)
    assert [line.split()[:2] for line in unknown.getvalue().splitlines()] == [["[real]", "3"], ["[real]", "5"]]
    assert "%" not in unknown.getvalue() and "ETA" not in unknown.getvalue()
