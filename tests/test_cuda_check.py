"""The standalone CUDA kernel check (custom_ops/check/check_cuda_kernels.cu) builds with nvcc alone.

CI compiles it like a user on a GPU machine would (no TensorFlow, no Bazel) and runs it: without
a GPU it must say so and exit 2, and its --cpu-only mode checks the CPU kernels against naive
loops over the fixture cases, which exercises the harness itself. Compiling takes about 30 s of
CPU time (nvcc on four files), hence slow.
"""

import pathlib
import shutil
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
KERNELS = REPO / "custom_ops" / "cc" / "kernels"
NVCC = shutil.which("nvcc")
EXIT_NO_GPU = 2

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found: the CUDA check cannot be compiled here")


def _gpu_present():
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """The check compiled with the command custom_ops/README.md documents (sources by glob)."""
    exe = tmp_path_factory.mktemp("cuda_check") / "check_cuda_kernels"
    sources = sorted(KERNELS.glob("*_kernels.cu")) + sorted(KERNELS.glob("*_kernels.cc"))
    assert len(sources) == 7, sources  # conv3x3 and to_rgb (CPU only) come along with the glob and link unused
    cmd = [NVCC, "-O2", "-std=c++17", "-I.", "-o", str(exe), "custom_ops/check/check_cuda_kernels.cu",
           *[str(s.relative_to(REPO)) for s in sources]]
    start = time.monotonic()
    build = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-6000:]
    print(f"nvcc built the CUDA check in {time.monotonic() - start:.0f} s")
    return exe


def test_kernel_sources_include_no_tensorflow_header():
    for src in KERNELS.iterdir():
        text = src.read_text()
        assert "tensorflow/" not in text and "unsupported/Eigen" not in text, src


@pytest.mark.slow
def test_without_a_gpu_it_says_so_and_exits_2(program):
    if _gpu_present():
        pytest.skip("a GPU is present: the no-GPU path cannot be reached")
    result = subprocess.run([str(program)], capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_NO_GPU, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "no GPU" in lines[0] and "--cpu-only" in lines[0], result.stdout


@pytest.mark.slow
def test_cpu_only_checks_every_case_against_naive_loops(program):
    result = subprocess.run([str(program), "--cpu-only"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:-1]]
    assert all(row[-1] == "ok" for row in rows), result.stdout
    cases = {(row[0], row[1], row[2], row[3]) for row in rows}
    for name in ("blur_pad11", "blur_pad11_k4x4", "blur_pad22", "down2_pad11", "up2_pad21_k4x4", "asym_up2_pad12",
                 "asym_down2_pad21", "asym_up3_down2_negpad"):  # the fixture's upfirdn2d configurations
        for dtype in ("float32", "float16"):
            assert ("upfirdn2d", name, dtype, "y") in cases and ("upfirdn2d_grad", name, dtype, "dx") in cases
    for dtype in ("float32", "float16"):
        assert {("fused_bias_act", "fused_lrelu", dtype, "y"), ("fused_bias_act_g", "fused_lrelu", dtype, "dx"),
                ("fused_bias_act_g", "fused_lrelu", dtype, "db")} <= cases
    assert ("half.h", "float16_conversions", "float16", "bits") in cases
    assert result.stdout.splitlines()[-1] == f"check_cuda_kernels: 0 of {len(rows)} comparisons failed"


@pytest.mark.slow
def test_bad_arguments_exit_3(program):
    result = subprocess.run([str(program), "--gpu"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3 and "usage" in result.stderr
