"""rosinality/CAGAN/StyleKD state_dicts <-> our Keras models, by an explicit name-to-name table.

Every parameter is looked up by its reference name and shape-checked; nothing is assigned by
list order. Before a model is built, the architecture a state_dict declares is checked against
its bounds, every tensor and the memory limit (``checked_generator_config``), so a crafted
checkpoint cannot make us allocate what it asks for. Kernel buffers (``blur.kernel``,
``upsample.kernel``, ``conv2.0.kernel``) are recomputed from the architecture, checked on
import and written on export so the reference code can ``load_state_dict`` our students strictly.
"""

import collections
import contextlib
import dataclasses
import re

import numpy as np

from tf_distill.convert import architecture
from tf_distill.convert.architecture import ArchitectureError
from tf_distill.models import Discriminator, Generator
from tf_distill.ops import setup_kernel

# How to fix a checkpoint we refuse (ends every message).
FIX = "use the original checkpoint, or one saved by the rosinality/CAGAN/StyleKD code or tf-distill"


class StateDictError(ArchitectureError):
    """A state_dict does not match the architecture (one-line message naming the parameter)."""


# Layout conversions: reference (PyTorch) array -> TF array, and back.
_TO_TF = {
    "linear": lambda a: a.T,                                # [out, in] -> [in, out]
    "modconv": lambda a: a[0].transpose(2, 3, 1, 0),        # [1, out, in, k, k] -> [k, k, in, out]
    "conv": lambda a: a.transpose(2, 3, 1, 0),              # [out, in, k, k] -> [k, k, in, out]
    "nchw": lambda a: a.transpose(0, 2, 3, 1),              # [1, C, H, W] -> [1, H, W, C]
    "rgb_bias": lambda a: a.reshape(3),                     # [1, 3, 1, 1] -> [3]
    "vector": lambda a: a,
}
_TO_TORCH = {
    "linear": lambda a: a.T,
    "modconv": lambda a: a.transpose(3, 2, 0, 1)[None],
    "conv": lambda a: a.transpose(3, 2, 0, 1),
    "nchw": lambda a: a.transpose(0, 3, 1, 2),
    "rgb_bias": lambda a: a.reshape(1, 3, 1, 1),
    "vector": lambda a: a,
}


@dataclasses.dataclass
class Entry:
    name: str       # reference state_dict name
    variable: object  # keras Variable
    kind: str       # key of _TO_TF / _TO_TORCH

    def torch_shape(self):
        return tuple(_TO_TORCH[self.kind](np.zeros(tuple(self.variable.shape), np.float32)).shape)


def _dense(prefix, layer):
    return [Entry(f"{prefix}.weight", layer.weight, "linear"), Entry(f"{prefix}.bias", layer.bias, "vector")]


def _modconv(prefix, conv):
    return [Entry(f"{prefix}.weight", conv.weight, "modconv")] + _dense(f"{prefix}.modulation", conv.modulation)


def _styled_conv(prefix, block):
    return _modconv(f"{prefix}.conv", block.conv) + [
        Entry(f"{prefix}.noise.weight", block.noise.weight, "vector"),
        Entry(f"{prefix}.activate.bias", block.activate.bias, "vector")]


def _to_rgb(prefix, block):
    return _modconv(f"{prefix}.conv", block.conv) + [Entry(f"{prefix}.bias", block.bias, "rgb_bias")]


def generator_table(g):
    """(entries, buffers): parameter entries and recomputed kernel buffers, in reference order."""
    if not g.built:
        g.build()
    first = 1 if g.mapping.pixel_norm else 0  # style.0 is PixelNorm in the standard mapping
    entries = []
    for i, layer in enumerate(g.mapping.dense_layers):
        entries += _dense(f"style.{i + first}", layer)
    syn = g.synthesis
    entries.append(Entry("input.input", syn.input_layer.input_const, "nchw"))
    entries += _styled_conv("conv1", syn.conv1) + _to_rgb("to_rgb1", syn.to_rgb1)
    buffers = {}
    up_kernel = setup_kernel(g.blur_kernel, gain=4.0)
    for n, block in enumerate(syn.convs):
        entries += _styled_conv(f"convs.{n}", block)
        if block.upsample:
            buffers[f"convs.{n}.conv.blur.kernel"] = up_kernel
    for j, block in enumerate(syn.to_rgbs):
        entries += _to_rgb(f"to_rgbs.{j}", block)
        buffers[f"to_rgbs.{j}.upsample.kernel"] = up_kernel
    for j, noise in enumerate(syn.noises):
        entries.append(Entry(f"noises.noise_{j}", noise, "nchw"))
    return entries, buffers


def _conv_layer(prefix, layer):
    """ConvLayer = Sequential([Blur], EqualConv2d, [FusedLeakyReLU]); indices shift by one with a blur."""
    i = 1 if layer.downsample else 0
    entries = [Entry(f"{prefix}.{i}.weight", layer.conv.weight, "conv")]
    if layer.conv.bias is not None:
        entries.append(Entry(f"{prefix}.{i}.bias", layer.conv.bias, "vector"))
    if layer.act is not None:
        entries.append(Entry(f"{prefix}.{i + 1}.bias", layer.act.bias, "vector"))
    buffers = {f"{prefix}.0.kernel": setup_kernel(layer.blur_kernel)} if layer.downsample else {}
    return entries, buffers


def discriminator_table(d):
    if not d.built:
        d.build()
    entries, buffers = _conv_layer("convs.0", d.from_rgb)
    for r, block in enumerate(d.blocks, start=1):
        for sub in ("conv1", "conv2", "skip"):
            e, b = _conv_layer(f"convs.{r}.{sub}", getattr(block, sub))
            entries += e
            buffers.update(b)
    e, _ = _conv_layer("final_conv", d.final_conv)
    entries += e + _dense("final_linear.0", d.final_linear_0) + _dense("final_linear.1", d.final_linear_1)
    return entries, buffers


def _index_sorted(keys, pattern):
    """Keys matching ``pattern`` (one integer group), sorted by that integer (registration order)."""
    found = [(int(m.group(1)), k) for k in keys if isinstance(k, str) for m in [re.fullmatch(pattern, k)] if m]
    return [k for _, k in sorted(found)]


def _shape(sd, name, ndim):
    if name not in sd:
        raise StateDictError(f"state_dict has no parameter '{name}': this is not a rosinality StyleGAN2 "
                             f"state_dict, or it is truncated ({FIX}).")
    value = sd[name]
    if not isinstance(value, np.ndarray) or value.ndim != ndim:
        what = f"shape {value.shape}" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
        raise StateDictError(f"parameter '{name}' is {what}, not a {ndim}-D tensor ({FIX}).")
    return tuple(int(n) for n in value.shape)


def _checked_log_size(log_size, what):
    if not 3 <= log_size <= architecture.MAX_SIZE.bit_length() - 1:
        raise StateDictError(f"state_dict has {what}, i.e. a resolution of 2^{log_size}; supported are 8 to "
                             f"{architecture.MAX_SIZE} ({FIX}).")
    return log_size


def generator_config_from_state_dict(sd, lr_mlp=0.01):
    """Architecture of a rosinality generator state_dict (as the reference's Build_Generator_From_Dict).

    Read from shapes only; bounds and every other tensor are checked by :func:`checked_generator_config`.
    The mapping's lr multiplier is not recoverable from weights: the standard mapping uses
    ``lr_mlp`` (0.01 in every rosinality/CAGAN/StyleKD model), a heterogeneous mapping (keys
    from ``style.0``, no PixelNorm) uses 1, as the reference's ``mlp_cfg``.
    """
    conv_keys = ["conv1.conv.weight"] + _index_sorted(sd, r"convs\.(\d{1,9})\.conv\.weight")
    shapes = [_shape(sd, k, 5) for k in conv_keys]
    if len(conv_keys) % 2 == 0:
        raise StateDictError(f"state_dict has {len(conv_keys) - 1} 'convs.N' layers; expected an even number "
                             f"({FIX}).")
    log_size = _checked_log_size(len(conv_keys) // 2 + 2, f"{len(conv_keys) - 1} 'convs.N' layers")
    channels = [s[2] for s in shapes] + [shapes[-1][1]]
    style_dim = _shape(sd, "conv1.conv.modulation.weight", 2)[1]
    kernel_size = shapes[2][-1] if len(shapes) > 2 else 3
    heterogeneous = "style.0.weight" in sd
    mapping_keys = _index_sorted(sd, r"style\.(\d{1,9})\.weight")
    if not mapping_keys:
        raise StateDictError(f"state_dict has no mapping network ('style.N.weight') ({FIX}).")
    widths = [_shape(sd, k, 2)[0] for k in mapping_keys]
    config = dict(size=2 ** log_size, style_dim=style_dim, n_mlp=len(widths), lr_mlp=float(lr_mlp),
                  channels=channels, kernel_size=kernel_size)
    if heterogeneous:
        config.update(mapping_widths=widths, mapping_lr_mul=1.0)
    return config


def discriminator_config_from_state_dict(sd):
    blocks = _index_sorted(sd, r"convs\.(\d{1,9})\.conv2\.1\.weight")
    channels = [_shape(sd, "convs.0.0.weight", 4)[0]] + [_shape(sd, k, 4)[0] for k in blocks]
    log_size = _checked_log_size(len(blocks) + 2, f"{len(blocks)} residual blocks ('convs.N.conv2')")
    return dict(size=2 ** log_size, channels=channels)


def check_state_dict(sd, params, buffers, strict=True, what="the model"):
    """Checks before anything is assigned or built: every name of ``params`` (name -> PyTorch shape) is in
    ``sd`` as a floating-point array of that shape, ``buffers`` present have their shape, and (``strict``)
    ``sd`` has no other names. Raises StateDictError naming the first problem."""
    missing = [name for name in params if name not in sd]
    if missing:
        raise StateDictError(f"state_dict lacks {len(missing)} parameter(s) {what} needs, first '{missing[0]}' "
                             f"({FIX}).")
    for name, shape in [*params.items(), *((b, s) for b, s in buffers.items() if b in sd)]:
        value = sd[name]
        if not isinstance(value, np.ndarray):
            raise StateDictError(f"parameter '{name}' is a {type(value).__name__}, not a tensor ({FIX}).")
        if tuple(value.shape) != tuple(shape):
            raise StateDictError(f"parameter '{name}' has shape {tuple(value.shape)} in the state_dict but {what} "
                                 f"expects {tuple(shape)} ({FIX}).")
        if not np.issubdtype(value.dtype, np.floating):
            raise StateDictError(f"parameter '{name}' has dtype {value.dtype}; expected floating point ({FIX}).")
    if strict:
        extra = [k for k in sd if k not in params and k not in buffers]
        if extra:
            raise StateDictError(f"state_dict has {len(extra)} name(s) {what} lacks, first '{extra[0]}' "
                                 f"({FIX}).")


def load_state_dict(model, sd, strict=True):
    """Assigns a reference state_dict to a built model, checking every name and shape.

    ``strict``: names in the state_dict that the model does not have are an error (kernel
    buffers are checked against the recomputed kernels instead).
    """
    entries, buffers = table(model)
    check_state_dict(sd, {e.name: e.torch_shape() for e in entries}, {k: v.shape for k, v in buffers.items()}, strict)
    values = []
    for e in entries:
        value = sd[e.name]
        if not np.all(np.isfinite(value)):
            raise StateDictError(f"parameter '{e.name}' contains NaN or Inf ({FIX}).")
        values.append(_TO_TF[e.kind](value).astype(np.float32))
    for name, kernel in buffers.items():
        if name in sd and not np.allclose(sd[name], kernel, atol=1e-6):
            raise StateDictError(f"buffer '{name}' differs from the FIR kernel {list(model.blur_kernel)} "
                                 "this model uses; pass the matching blur_kernel.")
    for e, v in zip(entries, values):
        e.variable.assign(v)


def state_dict(model):
    """The model's parameters and buffers as a reference state_dict (PyTorch layouts, reference order)."""
    entries, buffers = table(model)
    sd = collections.OrderedDict((e.name, _TO_TORCH[e.kind](np.asarray(e.variable.numpy()))) for e in entries)
    for name, kernel in buffers.items():
        sd[name] = kernel
    return sd


def table(model):
    if isinstance(model, Generator):
        return generator_table(model)
    if isinstance(model, Discriminator):
        return discriminator_table(model)
    raise TypeError(f"Expected a Generator or Discriminator, got {type(model).__name__}.")


def checked_generator_config(sd, lr_mlp=0.01, **overrides):
    """The Generator config a state_dict declares (with ``overrides``), checked against the bounds, against
    every tensor's shape and against the memory limit, all before anything is allocated."""
    with _as_state_dict_error():
        config = architecture.generator_config({**generator_config_from_state_dict(sd, lr_mlp=lr_mlp), **overrides})
        params, buffers = architecture.generator_shapes(config)
        check_state_dict(sd, params, buffers, what="the architecture it declares")
        architecture.check_memory(params, "the generator")
    return config


def checked_discriminator_config(sd, **overrides):
    """As :func:`checked_generator_config`, for a discriminator state_dict."""
    with _as_state_dict_error():
        config = architecture.discriminator_config({**discriminator_config_from_state_dict(sd), **overrides})
        params, buffers = architecture.discriminator_shapes(config)
        check_state_dict(sd, params, buffers, what="the architecture it declares")
        architecture.check_memory(params, "the discriminator")
    return config


@contextlib.contextmanager
def _as_state_dict_error():
    """An architecture a state_dict declares that we refuse is a StateDictError, like its other problems."""
    try:
        yield
    except StateDictError:
        raise
    except ArchitectureError as err:
        raise StateDictError(str(err)) from None


def build_from_state_dict(cls, config, sd):
    """A ``cls`` (Generator or Discriminator) of a checked ``config``, built and loaded from ``sd``."""
    model = cls(**config)
    model.build()
    load_state_dict(model, sd)
    return model


def generator_from_state_dict(sd, lr_mlp=0.01, **overrides):
    return build_from_state_dict(Generator, checked_generator_config(sd, lr_mlp=lr_mlp, **overrides), sd)


def discriminator_from_state_dict(sd, **overrides):
    return build_from_state_dict(Discriminator, checked_discriminator_config(sd, **overrides), sd)
