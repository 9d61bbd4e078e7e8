#!/usr/bin/env python3
"""Writes the git-ignored .bazelrc that the custom-op build (custom_ops/) needs.

    python configure.py [--python .venv/bin/python] [--cuda auto|yes|no] [--cuda-path DIR]

Everything comes from the TensorFlow installed in the given interpreter (tf.sysconfig): the
header directory, the framework library, the C++11 ABI flag and the other compile flags
(C++17, Eigen alignment). CUDA is found from `nvcc` on PATH (which may be a wrapper script:
the toolkit root is read from `nvcc --dryrun`), from $CUDA_HOME / $CUDA_PATH, or given with
--cuda-path; with --cuda auto (the default) a missing toolkit only disables the CUDA library.
Sources and the flags that do not depend on TensorFlow are in custom_ops/build_config.bzl.
custom_ops/build_without_bazel.py imports this module: build_settings() and select_cuda()
compute the flags for both builds.
"""

import argparse
import dataclasses
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
BUILD_CONFIG = ROOT / "custom_ops" / "build_config.bzl"


class ConfigureError(Exception):
    """A configuration problem to report in one line (each CLI adds its own prefix)."""


def load_build_config(path=BUILD_CONFIG):
    """build_config.bzl's names as a dict: the file is Starlark in the subset Python shares."""
    namespace = {}
    exec(compile(pathlib.Path(path).read_text(), str(path), "exec"), namespace)  # pylint: disable=exec-used
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


BUILD_CONFIG_VALUES = load_build_config()
DEFAULT_CUDA_ARCHS = BUILD_CONFIG_VALUES["DEFAULT_CUDA_ARCHS"]

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
    except OSError as e:
        raise ConfigureError(f"cannot run {python}: {e}") from e
    except subprocess.CalledProcessError as e:
        raise ConfigureError(f"cannot import tensorflow with {python} (exit {e.returncode}):\n"
                             f"{(e.stderr or '').strip()[-2000:]}") from e
    for line in out.splitlines():
        if line.startswith("TF_SYSCONFIG="):
            return json.loads(line[len("TF_SYSCONFIG="):])
    raise ConfigureError(f"unexpected output from {python}:\n{out[-2000:]}")


def parse_tf_flags(info):
    min_cxx_std = BUILD_CONFIG_VALUES["MIN_CXX_STD"]
    include_dir, defines, cxx_std = None, [], min_cxx_std
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
        raise ConfigureError(f"cannot parse tf.sysconfig flags: {info}")
    abi = "1"
    for d in defines:
        m = re.fullmatch(r"-D_GLIBCXX_USE_CXX11_ABI=(\d)", d)
        if m:
            abi = m.group(1)
    if cxx_std < min_cxx_std:
        cxx_std = min_cxx_std
    return include_dir, lib_dir, lib_name, abi, defines, cxx_std


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    """What both builds (Bazel via .bazelrc, build_without_bazel.py via g++) compile with."""
    python: str
    tf_version: str
    tf_include: str
    tf_lib_dir: str
    tf_lib_name: str
    abi: str
    cxx_flags: tuple  # every C++ compile: -std, build_config's CXX_FLAGS, TensorFlow's defines

    @property
    def tf_link_flags(self):
        return [f"-L{self.tf_lib_dir}", f"-l:{self.tf_lib_name}"]


def build_settings(python):
    """BuildSettings for the TensorFlow installed in `python` (an interpreter name or path)."""
    python = str(pathlib.Path(shutil.which(python) or python).absolute())
    info = query_tensorflow(python)
    include_dir, lib_dir, lib_name, abi, defines, cxx_std = parse_tf_flags(info)
    cxx_flags = [f"-std={cxx_std}"] + list(BUILD_CONFIG_VALUES["CXX_FLAGS"]) + defines
    return BuildSettings(python=python, tf_version=info["version"], tf_include=include_dir, tf_lib_dir=lib_dir,
                         tf_lib_name=lib_name, abi=abi, cxx_flags=tuple(cxx_flags))


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


def select_cuda(mode, explicit=None):
    """(toolkit root, nvcc, None) for --cuda auto|yes with a toolkit, else (None, None, why CUDA is off).

    Raises ConfigureError for --cuda yes without a toolkit.
    """
    if mode == "no":
        return None, None, "--cuda no"
    cuda_root, found = find_cuda(explicit)
    if cuda_root is None:
        if mode == "yes":
            raise ConfigureError(f"--cuda yes but {found}")
        return None, None, found
    return cuda_root, found, None


def add_arguments(parser):
    """The options configure.py and custom_ops/build_without_bazel.py share."""
    parser.add_argument("--python", default=os.environ.get("PYTHON_BIN_PATH", sys.executable),
                        help="interpreter whose TensorFlow the ops are built against (default: this one)")
    parser.add_argument("--cuda", choices=("auto", "yes", "no"), default="auto",
                        help="build the CUDA library: auto (when a toolkit is found), yes (fail without), no")
    parser.add_argument("--cuda-path", default=None, help="CUDA toolkit root (default: found from nvcc)")
    parser.add_argument("--cuda-archs", default=os.environ.get("TF_DISTILL_CUDA_ARCHS", DEFAULT_CUDA_ARCHS),
                        help=f"comma-separated SM versions (default {DEFAULT_CUDA_ARCHS})")


def write_bazelrc(settings, cuda_root, nvcc, cuda_archs):
    lines = [
        "# Generated by configure.py; git-ignored. Re-run configure.py to change it.",
        f"# TensorFlow {settings.tf_version} from {settings.python}",
        f"build --repo_env=PYTHON_BIN_PATH={settings.python}",
        f"build --python_path={settings.python}",
        f"build --repo_env=TF_HEADER_DIR={settings.tf_include}",
        f"build --repo_env=TF_SHARED_LIBRARY_DIR={settings.tf_lib_dir}",
        f"build --repo_env=TF_SHARED_LIBRARY_NAME={settings.tf_lib_name}",
        f"build --repo_env=TF_CXX11_ABI_FLAG={settings.abi}",
        f"build --repo_env=TF_DISTILL_CUDA_PATH={cuda_root or ''}",
        f"build --repo_env=TF_DISTILL_NVCC={nvcc or ''}",
        f"build --repo_env=TF_DISTILL_CUDA_ARCHS={cuda_archs}",
        "build --compilation_mode=opt",
        # Debian's linux-sandbox logs debug lines for every action, and sandboxing symlinks
        # TF's ~18k headers per compile: run actions unsandboxed (Bazel still checks includes).
        "build --spawn_strategy=local",
        f"build --host_cxxopt=-std={BUILD_CONFIG_VALUES['MIN_CXX_STD']}",
    ]
    lines += [f"build --cxxopt={flag}" for flag in settings.cxx_flags]  # all sources are C++
    BAZELRC.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = build_settings(args.python)
        cuda_root, nvcc, cuda_off = select_cuda(args.cuda, args.cuda_path)
    except ConfigureError as e:
        sys.exit(f"configure.py: {e}")
    if cuda_off and args.cuda != "no":
        print(f"configure.py: CUDA library disabled: {cuda_off}", file=sys.stderr)
    write_bazelrc(settings, cuda_root, nvcc, args.cuda_archs)
    print(f"configure.py: wrote {BAZELRC} (TensorFlow {settings.tf_version}, "
          f"CUDA {'at ' + str(cuda_root) if cuda_root else 'disabled'})")


if __name__ == "__main__":
    main()
