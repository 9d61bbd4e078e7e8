"""tf-distill-reproduce: suites, the diversity metric, the runner (report, skip, resume)."""

import csv

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_distill.configs.reproduce_fmnist32 import get_config
from tf_distill.io import checkpoints
from tf_distill.metrics.generator_eval import diversity
from tf_distill.reproduce import report
from tf_distill.errors import UserError
from tf_distill.reproduce.runner import SuiteRunner, check_suite_config_unchanged, plan, record_suite_config
from tf_distill.reproduce.suites import SUITES, resolve_config, row_overrides
from tf_distill.train.loop import Run


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _changed(config, reference):
    a, b = _flatten(config.to_dict()), _flatten(reference.to_dict())
    assert a.keys() == b.keys()
    return {k: a[k] for k in a if a[k] != b[k]}


def _expected_changes(row, base):
    """What a row's name says it changes, relative to the full loss (rgb_lpips_ld_kl)."""
    if row == "scratch":
        return {"teacher": ""}
    expected = {}
    if row.startswith("nogan"):
        expected.update({"train.gan": False, "train.path_reg": 0.0, "kd.weight_relation": 0.0})
        if row == "nogan_random_mapping":
            expected["kd.load_style"] = False
        if row == "nogan_mimic_mapping":
            expected.update({"kd.load_style": False, "stage1.steps": 500})
        return expected
    if "lpips" not in row:
        expected["kd.weight_lpips"] = 0.0
    if not any(t in row for t in ("_ld_", "random_offset", "single_view")):
        expected["kd.weight_relation"] = 0.0
    if row.endswith("_l2"):
        expected["kd.relation_mode"] = "mse"
    if "random_offset" in row:
        expected["kd.offset_mode"] = "random"
    if "single_view" in row:
        expected["kd.single_view"] = True
    assert all(_flatten(base.to_dict())[k] != v for k, v in expected.items())
    return expected


@pytest.mark.parametrize("suite,row", [(s, r) for s in SUITES for r in SUITES[s]])
def test_each_row_differs_from_the_full_loss_in_exactly_its_named_terms(suite, row):
    config = get_config()
    full = resolve_config(config.base, row_overrides("table1", "rgb_lpips_ld_kl"), 0)
    resolved = resolve_config(config.base, row_overrides(suite, row, config.mimic_steps), 0)
    assert _changed(resolved, full) == _expected_changes(row, full)


def test_unknown_suite_or_row_is_refused():
    with pytest.raises(ValueError, match="unknown suite"):
        row_overrides("table2", "rgb")
    with pytest.raises(ValueError, match="has no row"):
        row_overrides("table1", "nogan_random_mapping")
    with pytest.raises(ValueError, match="not in suite"):
        plan(get_config(), "/tmp/x", ["table1"], ["nogan_random_mapping"])


class _Synthesis:
    def __init__(self, shapes):
        self._shapes = shapes

    def noise_shapes(self):
        return self._shapes


class _ToyGenerator:
    """Images from z and the noise maps: ``uses_z=False`` ignores z entirely."""

    style_dim = 6

    def __init__(self, uses_z=True):
        self.uses_z = uses_z
        self.synthesis = _Synthesis([8, 32])
        self.w = np.random.default_rng(0).standard_normal((self.style_dim, 32 * 32 * 3)).astype(np.float32)

    def __call__(self, z, noise):
        x = tf.image.resize(noise[0], [32, 32]) * 0.3 + noise[1] * 0.2  # [N, 32, 32, 1]
        x = tf.tile(x, [1, 1, 1, 3])
        if self.uses_z:
            x += tf.reshape(tf.matmul(tf.convert_to_tensor(z), self.w), [-1, 32, 32, 3])
        return tf.tanh(x)


class _FixedDistances:
    """An LPIPS stand-in that returns preset distances in call order."""

    def __init__(self, values):
        self.values, self.used = values, 0

    def __call__(self, a, b):
        assert a.shape == b.shape
        out = self.values[self.used:self.used + a.shape[0]]
        self.used += a.shape[0]
        return out


def test_diversity_is_the_mean_over_pairs_of_fixed_distances():
    values = np.random.default_rng(5).uniform(0, 1, 23)
    fixed = _FixedDistances(values)
    assert diversity(_ToyGenerator(), fixed, num_pairs=23, batch_size=5) == pytest.approx(np.mean(values), abs=1e-12)
    assert fixed.used == 23


def test_a_generator_that_ignores_z_has_zero_diversity():
    from tf_distill.metrics.lpips import LPIPS  # pylint: disable=import-outside-toplevel

    lpips = LPIPS()
    assert diversity(_ToyGenerator(uses_z=False), lpips, num_pairs=8, batch_size=4) == 0.0
    assert diversity(_ToyGenerator(uses_z=True), lpips, num_pairs=8, batch_size=4) > 0.05


def test_verdicts():
    assert report.compare([1.0, 1.1, 0.9], [2.0, 2.1, 1.9])[0] == "reproduced"
    assert report.compare([2.0, 2.1, 1.9], [1.0, 1.1, 0.9])[0] == "not reproduced"
    assert report.compare([1.0, 2.0], [1.2, 2.1])[0] == "not distinguishable at this spread"
    assert report.compare([1.0], [2.0])[0] == "too few seeds to judge"


@pytest.mark.slow
def test_quick_suite_writes_the_report_and_a_rerun_skips_finished_runs(tmp_path):
    config = get_config("quick")
    specs = plan(config, tmp_path, ["table1", "fig1"], ["rgb", "nogan_random_mapping"], seeds=1)
    assert [s.name for s in specs] == ["table1/rgb/seed0", "fig1/nogan_random_mapping/seed0"]
    assert SuiteRunner(config, tmp_path, specs, log=lambda _: None).run()
    readme = report.write_report(config, tmp_path, specs, tmp_path / "report", command="tf-distill-reproduce ...")
    with open(tmp_path / "report" / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["suite"], r["row"], r["seed"], r["steps"]) for r in rows] == [
        ("table1", "rgb", "0", "4"), ("fig1", "nogan_random_mapping", "0", "4")]
    for r in rows:
        assert set(report.COLUMNS) <= r.keys()
        assert all(np.isfinite(float(r[m])) for m in report.METRICS)
    text = readme.read_text()
    assert "| `rgb` | 9.41 |" in text and "`nogan_random_mapping`" in text and "| teacher |" in text
    grid = Image.open(tmp_path / "report" / "grid.png")
    assert grid.height > 3 * 32  # teacher and both rows
    Image.open(tmp_path / "report" / "curves.png").verify()  # rgb and nogan_random_mapping record curves
    results = [s.directory / "result.json" for s in specs]
    mtimes = [p.stat().st_mtime_ns for p in results]
    logs = []
    assert SuiteRunner(config, tmp_path, specs, log=logs.append).run()
    assert logs == ["[reproduce] 2 runs planned, 2 already finished, 0 to run"]
    assert [p.stat().st_mtime_ns for p in results] == mtimes
    # Hand-written notes below the marker survive a rewrite.
    readme.write_text(readme.read_text() + "\nkept note\n")
    report.write_report(config, tmp_path, specs, tmp_path / "report")
    assert readme.read_text().endswith("kept note\n")
    # A README.md the report did not write (a --report_dir of the user's, with --overwrite) is kept below the marker.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "README.md").write_text("# my project\n")
    report.write_report(config, tmp_path, specs, tmp_path / "mine")
    assert (tmp_path / "mine" / "README.md").read_text().endswith(report.KEEP_MARKER + "\n# my project\n")


@pytest.mark.slow
def test_a_run_killed_after_its_first_checkpoint_ends_with_the_same_weights(tmp_path):
    config = get_config("quick")
    config.seeds = 1
    (a, b) = (plan(config, tmp_path / name, ["table1"], ["rgb_ld_kl"]) for name in ("a", "b"))
    assert SuiteRunner(config, tmp_path / "a", a, log=lambda _: None).run()
    # What a kill leaves behind: a checkpoint at step 2 of 4, no result.
    killed = Run(resolve_config(config.base, row_overrides("table1", "rgb_ld_kl"), 0), b[0].directory / "train")
    assert killed.run(max_steps=2) == 2 and (b[0].directory / "train" / "checkpoints").exists()
    assert SuiteRunner(config, tmp_path / "b", b, log=lambda _: None).run()
    for name in ("g_ema", "g", "d"):
        wa = checkpoints.load_models(a[0].directory / "train" / "final")[name].weights
        wb = checkpoints.load_models(b[0].directory / "train" / "final")[name].weights
        for va, vb in zip(wa, wb):
            np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=0, atol=1e-6, err_msg=va.path)


def test_a_suite_workdir_refuses_another_config_but_not_more_seeds(tmp_path):
    config = get_config()
    check_suite_config_unchanged(config, tmp_path)  # nothing recorded yet
    record_suite_config(config, tmp_path)
    check_suite_config_unchanged(config, tmp_path)
    more = get_config()
    more.seeds, more.base.log.every = 5, 7  # more runs, other logging: the results made so far still hold
    check_suite_config_unchanged(more, tmp_path)
    changed = get_config()
    changed.base.train.steps, changed.eval.fid_samples = 900, 500
    with pytest.raises(UserError, match=r"another config: config.base.train.steps 800 -> 900, "
                                        r"config.eval.fid_samples 1000 -> 500 \(rerun with the config"):
        check_suite_config_unchanged(changed, tmp_path)
    record_suite_config(changed, tmp_path)  # the record is written once, by the first sitting
    with pytest.raises(UserError, match="another config"):
        check_suite_config_unchanged(changed, tmp_path)


def test_the_binary_refuses_to_report_a_suite_made_with_another_config(tmp_path):
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    from pathlib import Path  # pylint: disable=import-outside-toplevel

    earlier = get_config()
    earlier.base.kd.weight_l1 = 2.0
    record_suite_config(earlier, tmp_path / "w")
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "tf_distill.bin.reproduce", f"--workdir={tmp_path / 'w'}",
                             "--report_only"], capture_output=True, text=True, cwd=repo, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(repo)})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "holds a suite made with another config: config.base.kd.weight_l1 2.0 -> 3.0" in result.stderr
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["suite_config.json"]  # no report written


@pytest.mark.parametrize("args,message", [
    (["--rows=bogus"], "are not in suite"),
    (["--report_only"], "/w does not exist: --report_only reports the runs of an earlier"),  # was an empty report
    (["--seeds=0"], "--seeds=0: 0 is not an integer in the range [1, 100]"),
    ([f"--seeds={10**12}"], "is not an integer in the range [1, 100]"),  # was a silent plan of 10^12 runs
    (["--report_dir=/dev/null"], "--report_dir=/dev/null is a file"),  # was found after training the suite
    (["--report_dir=" + __file__], "is a file"),
    (["--config.base.teacher=missing.keras"], "teacher checkpoint missing.keras not found"),
    # An override of the default config was applied as the flag was defined, at import: a traceback
    (["--config.seedz=1"], "unknown config key --config.seedz (did you mean --config.seeds?)"),
    # The suite's own keys and every planned run's training config, checked before the first run (they failed
    # when the run that reads them started, after the real-image FID statistics and the runs before it)
    (["--config.seeds=0", "--config.eval.batch=0"], "config.seeds must be an integer in [1, 100], got 0 (set "
     "--config.seeds); config.eval.batch must be an integer in [1, 1024]"),
    ([f"--config.seeds={10**12}"], "config.seeds must be an integer in [1, 100]"),  # planned 10^12 runs first
    (["--config.eval.curve_rows=('rgb', 'rbg')"], "config.eval.curve_rows names rows no suite has: rbg"),
    (["--config.base.train.steps=0"], "config.base.train.steps must be an integer >= 1"),
    (["--suite=fig1", "--config.base.kd.weight_l1=-1"], "config.base.kd.weight_l1 must be a finite number >= 0"),
])
def test_bad_flags_give_one_line_errors(tmp_path, args, message):
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    from pathlib import Path  # pylint: disable=import-outside-toplevel

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "tf_distill.bin.reproduce", f"--workdir={tmp_path / 'w'}", *args],
                            capture_output=True, text=True, cwd=repo, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(repo)})
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "w").exists()
