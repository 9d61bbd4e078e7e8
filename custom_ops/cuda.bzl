"""nvcc as a genrule: compiles a .cu file into a position-independent object."""

load("@local_config_tf//:build_defs.bzl", "NVCC", "NVCC_FLAGS")

def cuda_object(name, src, hdrs):
    """Compiles `src` with nvcc into `<name>.pic.o`, linkable into a cc_binary(linkshared=1)."""
    out = name + ".pic.o"
    native.genrule(
        name = name,
        srcs = [src] + hdrs,
        outs = [out],
        cmd = " ".join([NVCC, "-c"] + NVCC_FLAGS + ["-I.", "-o", "$@", "$(location %s)" % src]),
        message = "nvcc %s" % src,
    )
    return out
