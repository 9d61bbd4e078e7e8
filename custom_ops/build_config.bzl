"""The custom ops' sources and compile flags: the one list both builds read.

Loaded by Bazel (custom_ops/BUILD, third_party/tf/tf_configure.bzl) and exec'd as Python by
configure.py and custom_ops/build_without_bazel.py, so it is written in the subset Starlark
and Python share: assignments of literals and plain `def`s (no imports, no f-strings).
Flags that depend on the installed TensorFlow (include dir, ABI, -std, defines) come from
tf.sysconfig in configure.py; everything else is here.
"""

# Sources, relative to custom_ops/ (the includes are rooted at the repository root:
# "custom_ops/cc/...").
OP_SRCS = [
    "cc/ops/conv3x3_op.cc",
    "cc/ops/epilogue_op.cc",
    "cc/ops/fused_bias_act_op.cc",
    "cc/ops/to_rgb_op.cc",
    "cc/ops/upfirdn2d_op.cc",
]

KERNEL_SRCS = [
    "cc/kernels/conv3x3_kernels.cc",
    "cc/kernels/cpu_isa.cc",
    "cc/kernels/epilogue_kernels.cc",
    "cc/kernels/fused_bias_act_kernels.cc",
    "cc/kernels/to_rgb_kernels.cc",
    "cc/kernels/upfirdn2d_kernels.cc",
]

# The kernels (cc/kernels/) use no TensorFlow header: the ops (cc/ops/) validate, allocate and
# call them, and custom_ops/check/ builds them with nvcc alone. The CUDA files end in .cu so
# that nvcc compiles them as CUDA without flags.
CUDA_SRCS = [
    "cc/kernels/fused_bias_act_kernels.cu",
    "cc/kernels/upfirdn2d_kernels.cu",
]

HDRS = [
    "cc/kernels/conv3x3.h",
    "cc/kernels/conv3x3_tiles.inc",
    "cc/kernels/cpu_isa.h",
    "cc/kernels/epilogue.h",
    "cc/kernels/fused_bias_act.h",
    "cc/kernels/gpu_launch.h",
    "cc/kernels/half.h",
    "cc/kernels/parallel.h",
    "cc/kernels/per_sample.h",
    "cc/kernels/to_rgb.h",
    "cc/kernels/upfirdn2d.h",
    "cc/ops/checks.h",
    "cc/ops/device.h",
]

# C++ standard when TensorFlow asks for an older one (the sources use C++17).
MIN_CXX_STD = "c++17"

# Every C++ compile, after the -std flag and before TensorFlow's defines. -DNDEBUG is what
# Bazel's --compilation_mode=opt adds; the fallback builder needs it spelled out.
CXX_FLAGS = [
    "-O3",
    "-DNDEBUG",
    "-Wno-sign-compare",
    "-Wno-unused-result",
]

# The C++ files of the CUDA library (ops and CPU kernels) also register the GPU kernels.
CUDA_CXX_FLAGS = ["-DGOOGLE_CUDA=1"]

# cudart linked statically, after -L<toolkit>/lib64: the library loads under both the
# `tensorflow` and the `tensorflow-cpu` wheels and does not depend on the CUDA runtime
# version TF was built with.
CUDART_LINK_FLAGS = [
    "-l:libcudart_static.a",
    "-ldl",
    "-lrt",
    "-lpthread",
]

DEFAULT_CUDA_ARCHS = "75,80,86,89,90"  # nvcc 13 supports sm_75 and newer

def nvcc_flags(abi, tf_include, archs):
    """nvcc flags for a .cu file (without -c, -I<repo root>, -o and the source).

    abi: TensorFlow's _GLIBCXX_USE_CXX11_ABI value ("0" or "1"); tf_include: its header
    directory; archs: comma-separated SM versions, e.g. "75,80,86,89,90".
    """
    arch_list = [a.strip() for a in archs.split(",") if a.strip()]
    gencode = ["-gencode=arch=compute_%s,code=sm_%s" % (a, a) for a in arch_list]
    if arch_list:  # PTX of the newest arch, JIT-compiled by newer GPUs
        gencode.append("-gencode=arch=compute_%s,code=compute_%s" % (arch_list[-1], arch_list[-1]))
    return [
        "-x",
        "cu",
        "-std=" + MIN_CXX_STD,
    ] + CUDA_CXX_FLAGS + [
        "-DNDEBUG",
        "-O3",
        "--expt-relaxed-constexpr",
        "-Xcompiler",
        "-fPIC",
        "-D_GLIBCXX_USE_CXX11_ABI=%s" % abi,
        "-DEIGEN_MAX_ALIGN_BYTES=64",
        "-isystem",
        tf_include,
    ] + gencode
