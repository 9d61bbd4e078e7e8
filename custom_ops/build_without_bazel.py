#!/usr/bin/env python3
"""Builds the custom op libraries with g++ (and nvcc) directly, for machines without Bazel.

    python custom_ops/build_without_bazel.py [--python PY] [--cuda auto|yes|no] [--output_dir DIR]

custom_ops/build.sh (Bazel) is the build of record; this builder compiles the same sources
with the same flags so that both cannot drift apart: the source lists and the flags that do
not depend on TensorFlow come from custom_ops/build_config.bzl (which custom_ops/BUILD loads),
the TensorFlow and CUDA settings from configure.py's build_settings() and select_cuda().
Writes _custom_ops.so and, when CUDA is on, _custom_ops_cuda.so (CPU + CUDA kernels, cudart
linked statically) into --output_dir, by default tf_distill/ops/, where the loader looks after
bazel-bin/custom_ops/ (or point $TF_DISTILL_CUSTOM_OPS_LIBRARY at a library).
"""

import argparse
import concurrent.futures
import importlib.util
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "custom_ops"  # the sources' directory, relative to ROOT (their includes are rooted at ROOT)
DEFAULT_OUTPUT_DIR = ROOT / "tf_distill" / "ops"
PROG = "build_without_bazel.py"


def _import_configure():
    """configure.py as a module (it is a script at the repository root, not in a package)."""
    spec = importlib.util.spec_from_file_location("configure", ROOT / "configure.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks the module up while the class is created
    spec.loader.exec_module(module)
    return module


configure = _import_configure()


class BuildError(Exception):
    """A failed step, reported as its message (the failing command and its output's tail)."""


def _tail(text, limit=6000):
    text = text.strip()
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _run(cmd, label):
    """Runs one compile or link step from the repository root (relative source paths, like Bazel).

    Returns (seconds, the compiler's messages): warnings are shown, as Bazel shows them.
    """
    start = time.monotonic()
    try:
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    except OSError as e:
        raise BuildError(f"{label}: cannot run {cmd[0]}: {e}") from e
    messages = _tail(result.stderr + result.stdout)
    if result.returncode != 0:
        raise BuildError(f"{label} failed (exit {result.returncode}):\n$ {shlex.join(map(str, cmd))}\n{messages}")
    return time.monotonic() - start, messages


def _run_all(steps, jobs, counter):
    """Runs (label, cmd) steps `jobs` at a time, printing progress; stops at the first failure."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_run, cmd, label): label for label, cmd in steps}
        try:
            for future in concurrent.futures.as_completed(futures):
                seconds, messages = future.result()
                counter[0] += 1
                print(f"[{counter[0]}/{counter[1]}] {futures[future]} ({seconds:.1f} s)", flush=True)
                if messages:
                    print(messages, flush=True)
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _object(build_dir, variant, src):
    return build_dir / variant / (src.replace("/", "_") + ".o")


def plan(config, settings, cuda_root, nvcc, cuda_archs, cxx, build_dir, output_dir):
    """(compile steps, link steps): steps are (label, cmd); links also carry their temporary and final paths.

    nvcc steps come first: they take longest, so the g++ steps fill in around them.
    """
    cc_srcs = [f"{PACKAGE}/{s}" for s in config["OP_SRCS"] + config["KERNEL_SRCS"]]
    cxx_base = [cxx, "-c", "-fPIC"] + list(settings.cxx_flags)
    includes = ["-I.", "-isystem", settings.tf_include]

    # variant: (library, extra g++ flags, extra link flags, objects compiled by nvcc)
    variants = {"cpu": ("_custom_ops.so", [], [], [])}
    nvcc_steps = []
    if cuda_root:
        nvcc_base = [str(nvcc), "-c"] + config["nvcc_flags"](settings.abi, settings.tf_include, cuda_archs) + ["-I."]
        cuda_objects = []
        for src in (f"{PACKAGE}/{s}" for s in config["CUDA_SRCS"]):
            obj = _object(build_dir, "cuda", src)
            nvcc_steps.append((f"nvcc {src}", nvcc_base + ["-o", str(obj), src]))
            cuda_objects.append(obj)
        variants["cuda"] = ("_custom_ops_cuda.so",
                            config["CUDA_CXX_FLAGS"] + ["-isystem", f"{cuda_root}/include"],
                            [f"-L{cuda_root}/lib64"] + config["CUDART_LINK_FLAGS"],
                            cuda_objects)

    cc_steps, links = [], []
    for variant, (name, extra_flags, extra_link_flags, extra_objects) in variants.items():
        (build_dir / variant).mkdir(parents=True, exist_ok=True)
        objects = []
        for src in cc_srcs:
            obj = _object(build_dir, variant, src)
            cc_steps.append((f"{os.path.basename(cxx)} {src} ({variant})",
                             cxx_base + extra_flags + includes + ["-o", str(obj), src]))
            objects.append(obj)
        final = output_dir / name
        temp = output_dir / f".{name}.{os.getpid()}.tmp"
        cmd = [cxx, "-shared", "-o", str(temp)] + [str(o) for o in objects + extra_objects]
        links.append(((f"link {final}", cmd + settings.tf_link_flags + extra_link_flags), temp, final))
    return nvcc_steps + cc_steps, links


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    configure.add_arguments(parser)
    parser.add_argument("--output_dir", "--output-dir", type=pathlib.Path, default=DEFAULT_OUTPUT_DIR,
                        help=f"where the libraries go (default {DEFAULT_OUTPUT_DIR.relative_to(ROOT)}/)")
    parser.add_argument("--build_dir", "--build-dir", type=pathlib.Path, default=None,
                        help="keep the objects here (default: a temporary directory under build/, removed after)")
    parser.add_argument("--jobs", "-j", type=int, default=2, help="parallel compiles (default 2)")
    parser.add_argument("--cxx", default=os.environ.get("CXX", "g++"), help="C++ compiler (default $CXX or g++)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")

    start = time.monotonic()
    cxx = shutil.which(args.cxx)
    if not cxx:
        sys.exit(f"{PROG}: C++ compiler '{args.cxx}' not found; install g++ (apt-get install g++) or set --cxx")
    try:
        settings = configure.build_settings(args.python)
        cuda_root, nvcc, cuda_off = configure.select_cuda(args.cuda, args.cuda_path)
    except configure.ConfigureError as e:
        sys.exit(f"{PROG}: {e}")
    print(f"{PROG}: TensorFlow {settings.tf_version} from {settings.python}; "
          f"CUDA {f'at {cuda_root} (sm {args.cuda_archs})' if cuda_root else f'off ({cuda_off})'}", flush=True)

    output_dir = args.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.build_dir:
        build_dir, remove_build_dir = args.build_dir.resolve(), False
    else:
        (ROOT / "build").mkdir(exist_ok=True)
        build_dir, remove_build_dir = pathlib.Path(tempfile.mkdtemp(prefix="custom_ops-", dir=ROOT / "build")), True

    compiles, links = plan(configure.BUILD_CONFIG_VALUES, settings, cuda_root, nvcc, args.cuda_archs, cxx,
                           build_dir, output_dir)
    counter = [0, len(compiles) + len(links)]
    try:
        _run_all(compiles, args.jobs, counter)
        _run_all([step for step, _, _ in links], args.jobs, counter)
        for _, temp, final in links:
            os.replace(temp, final)  # atomic: a process loading the library never sees half a file
    except BuildError as e:
        sys.exit(f"{PROG}: {e}")
    except KeyboardInterrupt:
        sys.exit(f"{PROG}: interrupted")
    finally:
        for _, temp, _ in links:
            temp.unlink(missing_ok=True)
        if remove_build_dir:
            shutil.rmtree(build_dir, ignore_errors=True)

    built = [final for _, _, final in links]
    stale = output_dir / "_custom_ops_cuda.so"
    if not cuda_root and stale.is_file():
        print(f"{PROG}: note: {stale} from an earlier build is still there, and the loader prefers it "
              f"to the new CPU library; delete it to use {built[0]}", file=sys.stderr)
    print(f"{PROG}: built {', '.join(map(str, built))} in {time.monotonic() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
