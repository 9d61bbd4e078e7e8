"""The face-parsing network of StyleKD's content-aware mask (BiSeNet of face-parsing.PyTorch, spec G).

Why: the reference multiplies teacher and student images by a face mask before its RGB L1 and
LPIPS losses; the mask comes from this network with the widely distributed ``79999_iter.pth``.
The network is rebuilt here layer for layer (NHWC, eval-mode batch norm, PyTorch's symmetric
padding, nearest and align_corners=True resizes) so that its argmax matches the reference, and
its weights are read by our torch-free reader after every name and shape is checked.

The architecture is described once, as data (:data:`_LAYERS`: state_dict prefix -> conv or batch
norm and its size); the expected state_dict, the model's variables and the forward pass all read
that table by name.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tf_distill.io.torch_reader import load_torch_checkpoint
from tf_distill.errors import UserError

NUM_CLASSES = 19
BN_EPSILON = 1e-5
_FIX = "give the 79999_iter.pth of face-parsing.PyTorch (zllrunning), the weights CAGAN and StyleKD use"


def _layer_table():
    """Ordered {prefix: ("conv", c_out, c_in, k) or ("bn", c)}, in the reference's state_dict order."""
    t = {}

    def cbr(prefix, c_in, c_out, k, conv="conv", bn="bn"):
        t[f"{prefix}.{conv}"] = ("conv", c_out, c_in, k)
        t[f"{prefix}.{bn}"] = ("bn", c_out)

    cbr("cp.resnet", 3, 64, 7, conv="conv1", bn="bn1")
    c_in = 64
    for n, width in enumerate((64, 128, 256, 512), start=1):
        for i in range(2):
            block = f"cp.resnet.layer{n}.{i}"
            cbr(block, c_in, width, 3, conv="conv1", bn="bn1")
            cbr(block, width, width, 3, conv="conv2", bn="bn2")
            if i == 0 and (n > 1):  # width or stride changes: 1x1 conv + BN shortcut
                cbr(block, c_in, width, 1, conv="downsample.0", bn="downsample.1")
            c_in = width
    for arm, c in (("cp.arm16", 256), ("cp.arm32", 512)):
        cbr(f"{arm}.conv", c, 128, 3)
        cbr(arm, 128, 128, 1, conv="conv_atten", bn="bn_atten")
    cbr("cp.conv_head32", 128, 128, 3)
    cbr("cp.conv_head16", 128, 128, 3)
    cbr("cp.conv_avg", 512, 128, 1)
    cbr("ffm.convblk", 256, 256, 1)
    t["ffm.conv1"] = ("conv", 64, 256, 1)
    t["ffm.conv2"] = ("conv", 256, 64, 1)
    for head, c_in, mid in (("conv_out", 256, 256), ("conv_out16", 128, 64), ("conv_out32", 128, 64)):
        cbr(f"{head}.conv", c_in, mid, 3)
        t[f"{head}.conv_out"] = ("conv", NUM_CLASSES, mid, 1)
    return t


_LAYERS = _layer_table()
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")


def state_dict_shapes():
    """The state_dict of ``79999_iter.pth``: name -> PyTorch shape (``num_batches_tracked`` left out)."""
    shapes = {}
    for prefix, spec in _LAYERS.items():
        if spec[0] == "conv":
            _, c_out, c_in, k = spec
            shapes[f"{prefix}.weight"] = (c_out, c_in, k, k)
        else:
            shapes.update({f"{prefix}.{field}": (spec[1],) for field in _BN_FIELDS})
    return shapes


def _nearest(x, like):
    """PyTorch ``F.interpolate(mode='nearest')`` to ``like``'s size: source index floor(i * in / out)."""
    return tf.raw_ops.ResizeNearestNeighbor(images=x, size=tf.shape(like)[1:3], align_corners=False,
                                            half_pixel_centers=False)


def _global_mean(x):
    return tf.reduce_mean(x, axis=(1, 2), keepdims=True)


class FaceParsingNet(keras.Model):
    """BiSeNet (ResNet-18 context path, 19 classes) in eval mode; frozen.

    Input: NHWC float32, RGB already ImageNet-normalized. Returns ``(out, out16, out32)``, each
    [N, H, W, 19] logits resized to the input size (bilinear, align_corners=True), as the
    reference's ``BiSeNet.forward``; the mask uses ``out``.
    """

    def __init__(self, name="face_parsing", **kwargs):
        super().__init__(name=name, dtype="float32", **kwargs)  # float32 even under a mixed-precision policy
        self.params = {}  # state_dict name -> variable (PyTorch names, TF layouts)
        for prefix, spec in _LAYERS.items():
            if spec[0] == "conv":
                _, c_out, c_in, k = spec
                self._add(f"{prefix}.weight", (k, k, c_in, c_out), "he_normal")
            else:
                for field, init in zip(_BN_FIELDS, ("ones", "zeros", "zeros", "ones")):
                    self._add(f"{prefix}.{field}", (spec[1],), init)
        self.trainable = False

    def _add(self, name, shape, init):
        self.params[name] = self.add_weight(name=name, shape=shape, initializer=init, trainable=False)

    def load_state_dict(self, state_dict):
        """Assigns a checked state_dict (float32 arrays in PyTorch layout, see :func:`check_state_dict`)."""
        for name, var in self.params.items():
            value = state_dict[name]
            var.assign(value.transpose(2, 3, 1, 0) if value.ndim == 4 else value)

    # ---------------------------------------------------------------- pieces of the reference

    def _conv(self, prefix, x, stride=1):
        w = self.params[f"{prefix}.weight"]
        p = w.shape[0] // 2  # PyTorch padding: k3 pad 1, k7 pad 3, k1 pad 0, on every side
        return tf.nn.conv2d(x, w, stride, [[0, 0], [p, p], [p, p], [0, 0]])

    def _bn(self, prefix, x):
        g, b, mean, var = (self.params[f"{prefix}.{f}"] for f in _BN_FIELDS)
        scale = g * tf.math.rsqrt(var + BN_EPSILON)
        return x * scale + (b - mean * scale)

    def _cbr(self, prefix, x, stride=1, conv="conv", bn="bn"):
        return tf.nn.relu(self._bn(f"{prefix}.{bn}", self._conv(f"{prefix}.{conv}", x, stride)))

    def _basic_block(self, prefix, x, stride):
        r = self._cbr(prefix, x, stride, conv="conv1", bn="bn1")
        r = self._bn(f"{prefix}.bn2", self._conv(f"{prefix}.conv2", r))
        if f"{prefix}.downsample.0" in _LAYERS:
            x = self._bn(f"{prefix}.downsample.1", self._conv(f"{prefix}.downsample.0", x, stride))
        return tf.nn.relu(x + r)

    def _resnet(self, x):
        x = self._cbr("cp.resnet", x, 2, conv="conv1", bn="bn1")
        x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-math.inf)  # max-pool 3/2 pad 1
        x = tf.nn.max_pool2d(x, 3, 2, "VALID")
        feats = []
        for n in range(1, 5):
            for i in range(2):
                x = self._basic_block(f"cp.resnet.layer{n}.{i}", x, 2 if (i == 0 and n > 1) else 1)
            feats.append(x)
        return feats[1:]  # feat8, feat16, feat32

    def _arm(self, prefix, x):
        feat = self._cbr(f"{prefix}.conv", x)
        att = self._bn(f"{prefix}.bn_atten", self._conv(f"{prefix}.conv_atten", _global_mean(feat)))
        return feat * tf.sigmoid(att)

    def _context_path(self, x):
        feat8, feat16, feat32 = self._resnet(x)
        avg = self._cbr("cp.conv_avg", _global_mean(feat32))
        s32 = self._arm("cp.arm32", feat32) + _nearest(avg, feat32)
        cp16 = self._cbr("cp.conv_head32", _nearest(s32, feat16))
        s16 = self._arm("cp.arm16", feat16) + cp16
        cp8 = self._cbr("cp.conv_head16", _nearest(s16, feat8))
        return feat8, cp8, cp16

    def _ffm(self, feat8, cp8):
        f = self._cbr("ffm.convblk", tf.concat([feat8, cp8], axis=-1))
        att = self._conv("ffm.conv2", tf.nn.relu(self._conv("ffm.conv1", _global_mean(f))))
        return f * tf.sigmoid(att) + f

    def _head(self, prefix, x, size):
        logits = self._conv(f"{prefix}.conv_out", self._cbr(f"{prefix}.conv", x))
        return tf.raw_ops.ResizeBilinear(images=logits, size=size, align_corners=True, half_pixel_centers=False)

    def call(self, x):
        x = tf.convert_to_tensor(x, tf.float32)
        size = tf.shape(x)[1:3]
        feat8, cp8, cp16 = self._context_path(x)
        return (self._head("conv_out", self._ffm(feat8, cp8), size),
                self._head("conv_out16", cp8, size),
                self._head("conv_out32", cp16, size))


def check_state_dict(state_dict, where="the face-parsing weights"):
    """Every tensor of ``79999_iter.pth`` present with its shape, nothing else; returns float32 arrays.

    Accepts float32 or float16 tensors (cast), ignores ``*.num_batches_tracked``, and unwraps a
    ``{'state_dict': ...}`` wrapper. Raises a one-line UserError naming the tensor otherwise.
    """
    if type(state_dict) is dict and set(state_dict) == {"state_dict"}:
        state_dict = state_dict["state_dict"]
    if type(state_dict) is not dict:
        raise UserError(f"{where} holds a {type(state_dict).__name__}, not a state_dict ({_FIX})")
    expected = state_dict_shapes()
    tensors = {k: v for k, v in state_dict.items() if not (type(k) is str and k.endswith(".num_batches_tracked"))}
    for name in tensors:
        if name not in expected:
            raise UserError(f"{where} has an unexpected tensor {name!r:.80}: not a face-parsing BiSeNet ({_FIX})")
    out = {}
    for name, shape in expected.items():
        if name not in tensors:
            raise UserError(f"{where} lacks the tensor {name!r} ({_FIX})")
        value = tensors[name]
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
            raise UserError(f"{where}: {name!r} is {kind}, not a floating tensor ({_FIX})")
        if value.shape != shape:
            raise UserError(f"{where}: tensor {name!r} has shape {tuple(value.shape)} where the face-parsing "
                            f"network needs {shape} ({_FIX})")
        value = value.astype(np.float32)
        if not np.isfinite(value).all():
            raise UserError(f"{where}: tensor {name!r} holds NaN or infinite values (the file is damaged; {_FIX})")
        out[name] = value
    return out


def load_face_parsing(path):
    """The face-parsing network with the weights of ``path`` (a ``torch.save`` state_dict, zip or legacy
    format, e.g. ``79999_iter.pth``), read without torch. One-line UserError for a missing, unreadable,
    unsafe or mismatching file."""
    state_dict = check_state_dict(load_torch_checkpoint(path), where=str(path))
    net = FaceParsingNet()
    net.load_state_dict(state_dict)
    return net
