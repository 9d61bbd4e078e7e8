"""The bench scripts take absl flags like the binaries: a bad flag is one ``error:`` line (exit 2),
found before TensorFlow loads; a bad choice of ops or output folder is one line too."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import assert_one_line_error

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = ("generator", "metrics", "op_profile", "ops", "projection", "serving", "train")


def run_bench(name, *args, cwd, env=None, timeout=120):
    full_env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the console a user sees
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


@pytest.mark.parametrize("name", SCRIPTS)
def test_unknown_flag_is_one_line_error(name, tmp_path):
    result = run_bench(name, "--repeat=3", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "Unknown command line flag 'repeat'", "--helpshort")


@pytest.mark.parametrize("name, flag, words", [
    ("generator", "--impl=fast", ("--impl=fast", "auto|ref|custom")),
    ("generator", "--batch=0", ("--batch", "not a positive integer")),
    ("ops", "--sizes=64,x", ("--sizes", "'x' is not a positive integer")),
    ("ops", "--chain=0", ("--chain", "'0' is not a positive integer")),
    ("ops", "--allocator=arena", ("--allocator", "default|bfc")),
    ("metrics", "--threads=0", ("--threads", "not a positive integer")),
    ("projection", "--optimizer=lbfgs,sgd", ("--optimizer", "'sgd' is not one of lbfgs, adam")),
    ("projection", "--impl=Custom", ("--impl",)),
    ("serving", "--size=512", ("--size", "256|1024")),
    ("serving", "--repeats=-1", ("--repeats", "not a positive integer")),
    ("train", "--steps=0", ("--steps", "not a positive integer")),
])
def test_bad_flag_value_is_one_line_error(name, flag, words, tmp_path):
    result = run_bench(name, flag, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, *words)


def test_unexpected_argument_is_one_line_error(tmp_path):
    result = run_bench("serving", "256", cwd=tmp_path)  # the old argparse habit: a value without its flag
    assert result.returncode == 2
    assert_one_line_error(result, "Unexpected arguments", "256")


def test_serving_refuses_a_workdir_holding_other_files(tmp_path):
    work = tmp_path / "mine"
    (work / "student" / "1").mkdir(parents=True)
    (work / "student" / "1" / "saved_model.pb").write_text("not the bench's")
    result = run_bench("serving", f"--workdir={work}", cwd=tmp_path)
    assert result.returncode == 1
    assert_one_line_error(result, f"--workdir={work}", "not empty")
    assert (work / "student" / "1" / "saved_model.pb").read_text() == "not the bench's"


@pytest.mark.slow  # loads TensorFlow: 10-20 s on 2 busy cores
def test_custom_impl_without_the_library_is_one_line_error(tmp_path):
    missing = {"TF_DISTILL_CUSTOM_OPS_LIBRARY": str(tmp_path / "missing.so")}
    result = run_bench("generator", "--impl=custom", cwd=tmp_path, env=missing)
    assert result.returncode == 1
    assert_one_line_error(result, "--impl=custom needs the custom op library", "missing.so", "custom_ops/build.sh")


def _custom_ops_built():
    from tf_distill.ops import _loader  # pylint: disable=import-outside-toplevel

    return _loader.custom_ops_library() is not None


@pytest.mark.slow
def test_ops_bench_smallest_configuration(tmp_path):
    if not _custom_ops_built():
        pytest.skip("custom op library not built (custom_ops/build.sh)")
    result = run_bench("ops", "--sizes=8", "--batch=1", "--channels=2", "--repeats=1", "--min_seconds=0",
                       "--chain=1,2", "--allocator=bfc", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "batch 1, channels 2, median of >= 1 calls and ~0.0 s per function, allocator: BFC" in out
    for case in ("upsample2x", "blur", "downsample2x", "bias_act", "tf.negative"):
        assert sum(line.split()[0] == case and line.split()[1] == "8" for line in out.splitlines() if line) \
            == (1 if case == "tf.negative" else 2) * 2, (case, out)
    assert "ref/custom (wall, chain 1)" in out and "ref/custom (cpu, chain 2)" in out


def test_the_impl_flag_offers_the_library_choices():
    """bench/common.py names the choices itself (its flags are defined before TensorFlow loads, and
    importing tf_distill.ops loads it): they must stay the library's."""
    sys.path.insert(0, str(BENCH))
    try:
        import common  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.remove(str(BENCH))
    from tf_distill import ops  # pylint: disable=import-outside-toplevel

    assert common.IMPLS == ops.IMPLS
