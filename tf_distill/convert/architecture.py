"""What a generator or discriminator architecture may declare, the parameters it implies, and its memory.

Why: a checkpoint declares its architecture (a ``.pt`` through its tensor shapes, a ``.keras``
through its ``config.json``) and building the Keras model allocates whatever it declares, so a
crafted file of a few KB could ask for many GB. Everything a file declares is checked here
first, in plain Python and without allocating: sane bounds (:func:`generator_config`,
:func:`discriminator_config`), the exact shape of every parameter in the reference (PyTorch)
layout (:func:`generator_shapes`, :func:`discriminator_shapes`, which a test keeps equal to
the built models' ``rosinality.state_dict``), and the memory building it takes
(:func:`check_memory`, a limit the user can raise with ``TF_DISTILL_MAX_MODEL_GB``).
"""

import math
import numbers
import os

from tf_distill.errors import UserError
from tf_distill.models.discriminator import standard_discriminator_channels
from tf_distill.models.generator import generator_defaults, standard_channels

MAX_SIZE = 4096            # output resolution
MAX_WIDTH = 8192           # style_dim, channels and mapping widths
MAX_MAPPING_LAYERS = 64
MAX_KERNEL_SIZE = 9
MAX_BLUR_TAPS = 8
MAX_TENSOR_ELEMENTS = 2 ** 28  # 1 GiB of float32 in one parameter
MAX_STDDEV_GROUP = 2 ** 16

MEMORY_LIMIT_ENV = "TF_DISTILL_MAX_MODEL_GB"
DEFAULT_MEMORY_LIMIT_GB = 4.0  # an FFHQ-1024 StyleGAN2 generator or discriminator needs about 0.5
# Per parameter while a model is built and loaded: the float32 variable, its initial value, the
# array read from the file and its converted copy (measured: 12.7 for a 30M-parameter .pt generator).
BYTES_PER_PARAMETER = 16

_FIX = "the file is not a tf-distill/rosinality StyleGAN2 model, or it is damaged or crafted; use the original file"


class ArchitectureError(UserError, ValueError):
    """A model file declares an architecture that is invalid, out of bounds, or too large to build."""


def _integer(value, key, low, high):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ArchitectureError(f"{key}={value!r:.60} is out of range: expected an integer in [{low}, {high}] ({_FIX})")
    return int(value)


def _positive_float(value, key):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ArchitectureError(f"{key}={value!r:.60} must be a finite number > 0 ({_FIX})")
    return float(value)


def _integers(values, key, length, low, high):
    """A list of ``length`` integers in [low, high] (``length`` None: 1..MAX_MAPPING_LAYERS of them)."""
    if not isinstance(values, (list, tuple)):
        raise ArchitectureError(f"{key} must be a list of integers, got {type(values).__name__} ({_FIX})")
    if length is not None and len(values) != length:
        raise ArchitectureError(f"{key} has {len(values)} entries where the architecture needs {length} ({_FIX})")
    if length is None and not 1 <= len(values) <= MAX_MAPPING_LAYERS:
        raise ArchitectureError(f"{key} has {len(values)} entries; expected 1 to {MAX_MAPPING_LAYERS} ({_FIX})")
    return [_integer(v, f"{key}[{i}]", low, high) for i, v in enumerate(values)]


def _log2_size(size):
    size = _integer(size, "size", 8, MAX_SIZE)
    if size & (size - 1):
        raise ArchitectureError(f"size={size} is not a power of two in [8, {MAX_SIZE}] ({_FIX})")
    return size.bit_length() - 1


def _blur_kernel(taps):
    if not isinstance(taps, (list, tuple)) or not 1 <= len(taps) <= MAX_BLUR_TAPS:
        raise ArchitectureError(f"blur_kernel must list 1 to {MAX_BLUR_TAPS} integer taps ({_FIX})")
    taps = [_integer(t, f"blur_kernel[{i}]", -2 ** 16, 2 ** 16) for i, t in enumerate(taps)]
    if sum(taps) == 0:
        raise ArchitectureError(f"blur_kernel={taps} sums to zero ({_FIX})")
    return taps


def _standard_channels(size, channel_multiplier, table):
    if size > 1024:
        raise ArchitectureError(f"size={size} has no standard channel table (it stops at 1024); the config must "
                                f"list `channels` ({_FIX})")
    return table(size, channel_multiplier)


def generator_config(config):
    """The Generator constructor arguments of ``config`` (missing ones: the defaults), each checked against
    the bounds; channels filled in from the standard table when absent. Raises ArchitectureError."""
    c = {**generator_defaults(), **config}
    log_size = _log2_size(c["size"])
    out = dict(size=2 ** log_size, style_dim=_integer(c["style_dim"], "style_dim", 1, MAX_WIDTH),
               channel_multiplier=_integer(c["channel_multiplier"], "channel_multiplier", 1, MAX_WIDTH // 256),
               lr_mlp=_positive_float(c["lr_mlp"], "lr_mlp"),
               mapping_lr_mul=_positive_float(c["mapping_lr_mul"], "mapping_lr_mul"),
               blur_kernel=_blur_kernel(c["blur_kernel"]))
    out["kernel_size"] = _integer(c["kernel_size"], "kernel_size", 1, MAX_KERNEL_SIZE)
    if out["kernel_size"] % 2 == 0:
        raise ArchitectureError(f"kernel_size={out['kernel_size']} must be odd ({_FIX})")
    if c["mapping_widths"] is None:
        out["n_mlp"] = _integer(c["n_mlp"], "n_mlp", 1, MAX_MAPPING_LAYERS)
        out["mapping_widths"] = None
    else:
        out["mapping_widths"] = _integers(c["mapping_widths"], "mapping_widths", None, 1, MAX_WIDTH)
        out["n_mlp"] = _integer(c["n_mlp"], "n_mlp", 0, 2 ** 31)  # unused with mapping_widths
        if out["mapping_widths"][-1] != out["style_dim"]:
            raise ArchitectureError(f"the last mapping width {out['mapping_widths'][-1]} differs from "
                                    f"style_dim={out['style_dim']} ({_FIX})")
    if c["channels"] is None:
        c["channels"] = _standard_channels(out["size"], out["channel_multiplier"], standard_channels)
    out["channels"] = _integers(c["channels"], "channels", 2 * (log_size - 1), 1, MAX_WIDTH)
    _check_elements(generator_shapes(out)[0])
    return out


def discriminator_config(config):
    """The Discriminator constructor arguments of ``config``, checked like :func:`generator_config`."""
    c = {**dict(channel_multiplier=2, channels=None, stddev_group=4, stddev_features=1, stddev_chunk=None,
                blur_kernel=(1, 3, 3, 1)), **config}
    log_size = _log2_size(c["size"])
    out = dict(size=2 ** log_size,
               channel_multiplier=_integer(c["channel_multiplier"], "channel_multiplier", 1, MAX_WIDTH // 256),
               stddev_group=_integer(c["stddev_group"], "stddev_group", 1, MAX_STDDEV_GROUP),
               stddev_chunk=None if not c["stddev_chunk"] else _integer(c["stddev_chunk"], "stddev_chunk", 1,
                                                                       MAX_STDDEV_GROUP),
               blur_kernel=_blur_kernel(c["blur_kernel"]))
    if c["channels"] is None:
        c["channels"] = _standard_channels(out["size"], out["channel_multiplier"], standard_discriminator_channels)
    out["channels"] = _integers(c["channels"], "channels", log_size - 1, 1, MAX_WIDTH)
    out["stddev_features"] = _integer(c["stddev_features"], "stddev_features", 1, out["channels"][-1])
    if out["channels"][-1] % out["stddev_features"]:
        raise ArchitectureError(f"stddev_features={out['stddev_features']} does not divide the last channel count "
                                f"{out['channels'][-1]} ({_FIX})")
    _check_elements(discriminator_shapes(out)[0])
    return out


def _check_elements(shapes):
    for name, shape in shapes.items():
        if math.prod(shape) > MAX_TENSOR_ELEMENTS:
            raise ArchitectureError(f"parameter '{name}' would have shape {shape}, more than {MAX_TENSOR_ELEMENTS} "
                                    f"elements ({_FIX})")


def _fir_shape(blur_kernel):
    return (len(blur_kernel), len(blur_kernel))


def generator_shapes(config):
    """(parameters, buffers): reference state_dict name -> PyTorch-layout shape, of a checked config."""
    style_dim, ch, k = config["style_dim"], config["channels"], config["kernel_size"]
    params, buffers = {}, {}
    widths = config["mapping_widths"] or [style_dim] * config["n_mlp"]
    first, prev = (0 if config["mapping_widths"] else 1), style_dim  # style.0 is PixelNorm in the standard one
    for i, width in enumerate(widths):
        params.update({f"style.{i + first}.weight": (width, prev), f"style.{i + first}.bias": (width,)})
        prev = width

    def modconv(prefix, c_in, c_out, kernel):
        params.update({f"{prefix}.weight": (1, c_out, c_in, kernel, kernel),
                       f"{prefix}.modulation.weight": (c_in, style_dim), f"{prefix}.modulation.bias": (c_in,)})

    def styled_conv(prefix, c_in, c_out, kernel):
        modconv(f"{prefix}.conv", c_in, c_out, kernel)
        params.update({f"{prefix}.noise.weight": (1,), f"{prefix}.activate.bias": (c_out,)})

    def to_rgb(prefix, c_in):
        modconv(f"{prefix}.conv", c_in, 3, 1)
        params[f"{prefix}.bias"] = (1, 3, 1, 1)

    params["input.input"] = (1, ch[0], 4, 4)
    styled_conv("conv1", ch[0], ch[1], 3)
    to_rgb("to_rgb1", ch[1])
    for i in range(1, len(ch) // 2):
        styled_conv(f"convs.{2 * i - 2}", ch[2 * i - 1], ch[2 * i], 3)
        buffers[f"convs.{2 * i - 2}.conv.blur.kernel"] = _fir_shape(config["blur_kernel"])
        styled_conv(f"convs.{2 * i - 1}", ch[2 * i], ch[2 * i + 1], k)
        to_rgb(f"to_rgbs.{i - 1}", ch[2 * i + 1])
        buffers[f"to_rgbs.{i - 1}.upsample.kernel"] = _fir_shape(config["blur_kernel"])
    for j in range(len(ch) - 1):  # one constant noise map per conv layer: 4, 8, 8, ..., size, size
        r = 2 ** ((j + 5) // 2)
        params[f"noises.noise_{j}"] = (1, 1, r, r)
    return params, buffers


def discriminator_shapes(config):
    """(parameters, buffers) of a checked discriminator config, as :func:`generator_shapes`."""
    ch, params, buffers = config["channels"], {}, {}

    def conv_layer(prefix, c_in, c_out, kernel, downsample=False, activate=True):
        i = 1 if downsample else 0  # Sequential([Blur], EqualConv2d, [FusedLeakyReLU])
        params[f"{prefix}.{i}.weight"] = (c_out, c_in, kernel, kernel)
        if activate:
            params[f"{prefix}.{i + 1}.bias"] = (c_out,)
        if downsample:
            buffers[f"{prefix}.0.kernel"] = _fir_shape(config["blur_kernel"])

    conv_layer("convs.0", 3, ch[0], 1)
    for r in range(1, len(ch)):
        conv_layer(f"convs.{r}.conv1", ch[r - 1], ch[r - 1], 3)
        conv_layer(f"convs.{r}.conv2", ch[r - 1], ch[r], 3, downsample=True)
        conv_layer(f"convs.{r}.skip", ch[r - 1], ch[r], 1, downsample=True, activate=False)
    conv_layer("final_conv", ch[-1] + config["stddev_features"], ch[-1], 3)
    params.update({"final_linear.0.weight": (ch[-1], ch[-1] * 16), "final_linear.0.bias": (ch[-1],),
                   "final_linear.1.weight": (1, ch[-1]), "final_linear.1.bias": (1,)})
    return params, buffers


def parameter_count(shapes):
    return sum(math.prod(s) for s in shapes.values())


def memory_limit_bytes():
    """The most memory one model may take to build: ``TF_DISTILL_MAX_MODEL_GB`` GB (default 4)."""
    raw = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_MEMORY_LIMIT_GB
    except ValueError:
        gb = math.nan
    if not (math.isfinite(gb) and gb > 0):
        raise UserError(f"{MEMORY_LIMIT_ENV}={raw!r} is not a number of GB > 0 (e.g. {MEMORY_LIMIT_ENV}=16)")
    return gb * 1e9


def check_memory(shapes, what="the model"):
    """Refuses a model whose parameters (``shapes``) would take more memory to build than the limit."""
    need, limit = parameter_count(shapes) * BYTES_PER_PARAMETER, memory_limit_bytes()
    if need > limit:
        raise ArchitectureError(
            f"{what} has {parameter_count(shapes):,} parameters and needs about {need / 1e9:.1f} GB to build, more "
            f"than the {limit / 1e9:g} GB limit (if you trust the file and have the memory, raise the limit with "
            f"{MEMORY_LIMIT_ENV}=<GB>)")
