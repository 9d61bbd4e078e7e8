"""rosinality/CAGAN/StyleKD state_dicts <-> our Keras models, by an explicit name-to-name table.

Every parameter is looked up by its reference name and shape-checked; nothing is assigned by
list order. Kernel buffers (``blur.kernel``, ``upsample.kernel``, ``conv2.0.kernel``) are
recomputed from the architecture, checked on import and written on export so the reference
code can ``load_state_dict`` our students strictly.
"""

import collections
import dataclasses
import re

import numpy as np

from tf_distill.models import Discriminator, Generator
from tf_distill.ops import setup_kernel


class StateDictError(ValueError):
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
    found = [(int(m.group(1)), k) for k in keys for m in [re.fullmatch(pattern, k)] if m]
    return [k for _, k in sorted(found)]


def _shape(sd, name):
    if name not in sd:
        raise StateDictError(f"state_dict has no parameter '{name}': this is not a rosinality StyleGAN2 "
                             "state_dict, or it is truncated.")
    return tuple(np.shape(sd[name]))


def generator_config_from_state_dict(sd, lr_mlp=0.01):
    """Architecture of a rosinality generator state_dict (as the reference's Build_Generator_From_Dict).

    The mapping's lr multiplier is not recoverable from weights: the standard mapping uses
    ``lr_mlp`` (0.01 in every rosinality/CAGAN/StyleKD model), a heterogeneous mapping (keys
    from ``style.0``, no PixelNorm) uses 1, as the reference's ``mlp_cfg``.
    """
    conv_keys = ["conv1.conv.weight"] + _index_sorted(sd, r"convs\.(\d+)\.conv\.weight")
    shapes = [_shape(sd, k) for k in conv_keys]
    for k, s in zip(conv_keys, shapes):
        if len(s) != 5:
            raise StateDictError(f"parameter '{k}' has shape {s}; a modulated conv weight is [1, out, in, k, k].")
    channels = [s[2] for s in shapes] + [shapes[-1][1]]
    if len(channels) % 2:
        raise StateDictError(f"state_dict has {len(conv_keys) - 1} 'convs.N' layers; expected an even number.")
    size = 2 ** (len(channels) // 2 + 1)
    style_dim = _shape(sd, "conv1.conv.modulation.weight")[1]
    kernel_size = shapes[2][-1] if len(shapes) > 2 else 3
    heterogeneous = "style.0.weight" in sd
    mapping_keys = _index_sorted(sd, r"style\.(\d+)\.weight")
    if not mapping_keys:
        raise StateDictError("state_dict has no mapping network ('style.N.weight').")
    widths = [_shape(sd, k)[0] for k in mapping_keys]
    config = dict(size=size, style_dim=style_dim, n_mlp=len(widths), lr_mlp=float(lr_mlp), channels=channels,
                  kernel_size=kernel_size)
    if heterogeneous:
        config.update(mapping_widths=widths, mapping_lr_mul=1.0)
    return config


def discriminator_config_from_state_dict(sd):
    blocks = _index_sorted(sd, r"convs\.(\d+)\.conv2\.1\.weight")
    channels = [_shape(sd, "convs.0.0.weight")[0]] + [_shape(sd, k)[0] for k in blocks]
    return dict(size=2 ** (len(blocks) + 2), channels=channels)


def load_state_dict(model, sd, strict=True):
    """Assigns a reference state_dict to a built model, checking every name and shape.

    ``strict``: names in the state_dict that the model does not have are an error (kernel
    buffers are checked against the recomputed kernels instead).
    """
    entries, buffers = table(model)
    missing = [e.name for e in entries if e.name not in sd]
    if missing:
        raise StateDictError(f"state_dict lacks {len(missing)} parameter(s) the model needs, first "
                             f"'{missing[0]}'; the checkpoint's architecture differs from the model's.")
    values = []
    for e in entries:
        value = np.asarray(sd[e.name])
        if tuple(value.shape) != e.torch_shape():
            raise StateDictError(f"parameter '{e.name}' has shape {tuple(value.shape)} in the state_dict but the "
                                 f"model expects {e.torch_shape()}.")
        if not np.issubdtype(value.dtype, np.floating):
            raise StateDictError(f"parameter '{e.name}' has dtype {value.dtype}; expected floating point.")
        if not np.all(np.isfinite(value)):
            raise StateDictError(f"parameter '{e.name}' contains NaN or Inf.")
        values.append(_TO_TF[e.kind](value).astype(np.float32))
    for name, kernel in buffers.items():
        if name in sd and not np.allclose(np.asarray(sd[name]), kernel, atol=1e-6):
            raise StateDictError(f"buffer '{name}' differs from the FIR kernel {list(model.blur_kernel)} "
                                 "this model uses; pass the matching blur_kernel.")
    if strict:
        known = {e.name for e in entries} | set(buffers)
        extra = [k for k in sd if k not in known]
        if extra:
            raise StateDictError(f"state_dict has {len(extra)} name(s) the model lacks, first '{extra[0]}'; "
                                 "the checkpoint's architecture differs from the model's.")
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


def generator_from_state_dict(sd, lr_mlp=0.01, **overrides):
    g = Generator(**{**generator_config_from_state_dict(sd, lr_mlp=lr_mlp), **overrides})
    g.build()
    load_state_dict(g, sd)
    return g


def discriminator_from_state_dict(sd, **overrides):
    d = Discriminator(**{**discriminator_config_from_state_dict(sd), **overrides})
    d.build()
    load_state_dict(d, sd)
    return d
