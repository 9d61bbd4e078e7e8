#!/usr/bin/env python3
"""Writes the git-ignored .bazelrc that the custom-op build (custom_ops/) needs.

    python configure.py [--python .venv/bin/python] [--cuda auto|yes|no] [--cuda-path DIR]

Everything comes from the TensorFlow installed in the given interpreter (tf.sysconfig): the
header directory, the framework library, the C++11 ABI flag and the other compile flags
(C++17, Eigen alignment). CUDA is found from `nvcc` on PATH (which may be a wrapper script:
the toolkit root is read from `nvcc --dryrun`), from $CUDA_HOME / $CUDA_PATH, or given with
--cuda-path; with --cuda auto (the default) a missing toolkit only disables the CUDA library.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent
BAZELRC = ROOT / ".bazelrc"
DEFAULT_CUDA_ARCHS = "75,80,86,89,90"  # nvcc 13 supports sm_75 and newer

_TF_QUERY = r"""
import json, tensorflow as tf
print("TF_SYSCONFIG=" + json.dumps({
    "version": tf.__version__,
    "compile_flags": tf.sysconfig.get_compile_flags(),
    "link_flags": tf.sysconfig.get_link_flags(),
    "cuda_build": bool(tf.test.is_built_with_cuda()),
}))
"""


def query_tensorflow(python):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    try:
        out = subprocess.run([python, "-c", _TF_QUERY], check=True, capture_output=True, text=True, env=env).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        stderr = getattr(e, "stderr", "") or ""
        sys.exit(f"configure.py: cannot import tensorflow with {python}: {e}\n{stderr[-2000:]}")
    for line in out.splitlines():
        if line.startswith("TF_SYSCONFIG="):
            return json.loads(line[len("TF_SYSCONFIG="):])
    sys.exit(f"configure.py: unexpected output from {python}:\n{out[-2000:]}")


def parse_tf_flags(info):
    include_dir, defines, cxx_std = None, [], "c++17"
    for flag in info["compile_flags"]:
        if flag.startswith("-I"):
            include_dir = flag[2:]
        elif flag.startswith("-D"):
            defines.append(flag)
        elif flag.startswith(("--std=", "-std=")):
            cxx_std = flag.split("=", 1)[1]
    lib_dir, lib_name = None, None
    for flag in info["link_flags"]:
        if flag.startswith("-L"):
            lib_dir = flag[2:]
        elif flag.startswith("-l:"):
            lib_name = flag[3:]
        elif flag.startswith("-l"):
            lib_name = f"lib{flag[2:]}.so"
    if not include_dir or not lib_dir or not lib_name:
        sys.exit(f"configure.py: cannot parse tf.sysconfig flags: {info}")
    abi = "1"
    for d in defines:
        m = re.fullmatch(r"-D_GLIBCXX_USE_CXX11_ABI=(\d)", d)
        if m:
            abi = m.group(1)
    if cxx_std < "c++17":
        cxx_std = "c++17"
    return include_dir, lib_dir, lib_name, abi, defines, cxx_std


def find_cuda(explicit=None):
    """(toolkit root, nvcc path) or (None, reason)."""
    candidates = []
    if explicit:
        candidates.append(pathlib.Path(explicit))
    nvcc = shutil.which("nvcc")
    if nvcc:
        # The nvcc on PATH may be a wrapper script; --dryrun prints the real toolkit root (TOP=...).
        with tempfile.TemporaryDirectory() as tmp:
            src = pathlib.Path(tmp) / "probe.cu"
            src.write_text("int main() { return 0; }\n")
            try:
                out = subprocess.run([nvcc, "--dryrun", "-c", str(src), "-o", str(src) + ".o"],
                                     capture_output=True, text=True, timeout=60)
                for line in (out.stdout + out.stderr).splitlines():
                    m = re.match(r"#\$ TOP=(.*)$", line.strip())
                    if m:
                        candidates.append(pathlib.Path(m.group(1)).resolve())
                        break
            except (OSError, subprocess.SubprocessError):
                pass
        candidates.append(pathlib.Path(nvcc).resolve().parent.parent)
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(pathlib.Path(os.environ[var]))
    candidates.append(pathlib.Path("/usr/local/cuda"))
    for root in candidates:
        root = root.resolve()
        real_nvcc = root / "bin" / "nvcc"
        if (real_nvcc.is_file() and (root / "include" / "cuda_runtime.h").is_file()
                and (root / "lib64" / "libcudart_static.a").is_file()):
            return root, real_nvcc
    return None, "no CUDA toolkit with bin/nvcc, include/cuda_runtime.h and lib64/libcudart_static.a found " \
                 f"(looked at {', '.join(str(c) for c in candidates) or 'nothing'})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=os.environ.get("PYTHON_BIN_PATH", sys.executable),
                        help="interpreter whose TensorFlow the ops are built against (default: this one)")
    parser.add_argument("--cuda", choices=("auto", "yes", "no"), default="auto",
                        help="build the CUDA library: auto (when a toolkit is found), yes (fail without), no")
    parser.add_argument("--cuda-path", default=None, help="CUDA toolkit root (default: found from nvcc)")
    parser.add_argument("--cuda-archs", default=os.environ.get("TF_DISTILL_CUDA_ARCHS", DEFAULT_CUDA_ARCHS),
                        help=f"comma-separated SM versions (default {DEFAULT_CUDA_ARCHS})")
    args = parser.parse_args(argv)

    python = shutil.which(args.python) or args.python
    python = str(pathlib.Path(python).absolute())
    info = query_tensorflow(python)
    include_dir, lib_dir, lib_name, abi, defines, cxx_std = parse_tf_flags(info)

    cuda_root, nvcc = None, None
    if args.cuda != "no":
        cuda_root, found = find_cuda(args.cuda_path)
        if cuda_root is None:
            if args.cuda == "yes":
                sys.exit(f"configure.py: --cuda yes but {found}")
            print(f"configure.py: CUDA library disabled: {found}", file=sys.stderr)
        else:
            nvcc = found

    lines = [
        "# Generated by configure.py; git-ignored. Re-run configure.py to change it.",
        f"# TensorFlow {info['version']} from {python}",
        f"build --repo_env=PYTHON_BIN_PATH={python}",
        f"build --python_path={python}",
        f"build --repo_env=TF_HEADER_DIR={include_dir}",
        f"build --repo_env=TF_SHARED_LIBRARY_DIR={lib_dir}",
        f"build --repo_env=TF_SHARED_LIBRARY_NAME={lib_name}",
        f"build --repo_env=TF_CXX11_ABI_FLAG={abi}",
        f"build --repo_env=TF_DISTILL_CUDA_PATH={cuda_root or ''}",
        f"build --repo_env=TF_DISTILL_NVCC={nvcc or ''}",
        f"build --repo_env=TF_DISTILL_CUDA_ARCHS={args.cuda_archs}",
        "build --compilation_mode=opt",
        # Debian's linux-sandbox logs debug lines for every action, and sandboxing symlinks
        # TF's ~18k headers per compile: run actions unsandboxed (Bazel still checks includes).
        "build --spawn_strategy=local",
        "build --copt=-O3",
        f"build --cxxopt=-std={cxx_std}",
        "build --host_cxxopt=-std=c++17",
    ]
    lines += [f"build --copt={d}" for d in defines]
    lines += [
        "build --copt=-Wno-sign-compare",
        "build --copt=-Wno-unused-result",
    ]
    BAZELRC.write_text("\n".join(lines) + "\n")
    print(f"configure.py: wrote {BAZELRC} (TensorFlow {info['version']}, "
          f"CUDA {'at ' + str(cuda_root) if cuda_root else 'disabled'})")


if __name__ == "__main__":
    main()
