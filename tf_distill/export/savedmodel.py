"""The EMA generator as a versioned SavedModel that stock TensorFlow Serving loads.

Signatures (all outputs ``images``: uint8 [N, H, W, 3], rounded like ``tf_distill.images.to_uint8``):

- ``serving_default``: ``z`` float32 [N, style_dim], ``truncation_psi`` float32 scalar (default 1).
- ``from_seeds``: ``seeds`` int64 [N] (any int64), ``truncation_psi`` (default 1). z of a seed is
  ``z_from_seeds`` (stateless Philox normal, seed pair ``[seed, 0]``): the same in every process.
- ``from_w``: ``w`` float32 [N, L, style_dim] with L = n_latent (W+) or 1 (W), ``truncation_psi``.
- ``style_mix``: ``w1``, ``w2`` float32 [N, L, style_dim], ``layer_start``, ``layer_end`` int32
  scalars, ``truncation_psi``: W+ rows ``layer_start <= i < layer_end`` come from ``w2``, the rest from ``w1``.
- ``mapping``: ``z`` -> ``w`` float32 [N, style_dim] (untruncated; for editing clients).

Input bounds: every entry of ``z``, ``w``, ``w1``, ``w2`` must be finite with absolute value at
most ``MAX_ABS_LATENT`` = 1e4; ``truncation_psi`` must be in [0, 1]; N in 1..``max_batch``.
z is standard normal (|z| < 7 in practice) and the mapping's w are O(1)-O(10), so 1e4 leaves
room for any projection or edit, while far larger values overflow float32 inside the generator
(w = 3e38 renders NaN, a black image) and NaN/inf propagate to every pixel.

Truncation is ``w_avg + psi (w - w_avg)`` with ``w_avg`` stored in the model (the checkpoint's
``latent_avg`` when it has one, else the mean of w over a fixed-seed z sample); psi = 1 is exact
(no arithmetic). Noise is the generator's stored constant maps unless exported with
``randomize_noise=True``. Batch size is dynamic, 1..``max_batch``.

Every input is validated in the graph (``tf.debugging.Assert`` -> ``InvalidArgument`` with a
message), in a function traced with unknown shapes, because TF Serving feeds tensors without
checking them against the signature's shapes.

The graph is traced through the reference ops (``ops.implementation("ref")`` during the export),
with what depends on the weights alone computed once as constants (``layers.modulated.frozen_weights``),
and checked with ``stock_ops.check_saved_model`` before the version directory appears.
"""

import json
import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from tf_distill import ops
from tf_distill.layers.modulated import frozen_weights
from tf_distill.outputs import staged_directory

DEFAULT_MAX_BATCH = 64
MAX_ABS_LATENT = 1e4  # bound on |z|, |w| entries (module doc): ~1000x what the mapping produces, far from overflow
METADATA_FILE = "tf_distill_export.json"
# What a version folder holds (tf.saved_model.save, and our assets.extra/METADATA_FILE).
SAVED_MODEL_ENTRIES = ("saved_model.pb", "variables", "assets", "assets.extra", "fingerprint.pb")
SIGNATURE_NAMES = ("serving_default", "from_seeds", "from_w", "style_mix", "mapping")


def z_from_seeds(seeds, style_dim):
    """z [N, style_dim] for int64 seeds [N]: ``stateless_normal([style_dim], seed=[seed, 0], alg='philox')``.

    Philox is pinned (``auto_select`` may pick another algorithm on other devices), so a seed
    gives the same z on every machine running the same TF version.
    """
    seeds = tf.cast(tf.convert_to_tensor(seeds), tf.int64)

    def one(seed):
        return tf.random.stateless_normal([style_dim], seed=tf.stack([seed, tf.constant(0, tf.int64)]),
                                          alg="philox")

    return tf.map_fn(one, seeds, fn_output_signature=tf.TensorSpec([style_dim], tf.float32))


def images_to_uint8(images):
    """[-1, 1] float -> uint8 in the graph, the same rounding as ``tf_distill.images.to_uint8``."""
    return tf.cast(tf.clip_by_value(tf.floor((images + 1.0) * 127.5 + 0.5), 0.0, 255.0), tf.uint8)


def static(x, shape):
    """Declares the static shape a guarded tensor has (no op: see ``guard``)."""
    x.set_shape(shape)
    return x


def guard(values, checks, *data):
    """``values`` (a tensor or a tuple of them), passed on only when every check holds.

    ``checks`` is a list of (scalar bool, message); the first failing one stops the graph with
    InvalidArgument ``assertion failed: [message] [data...]``. All conditions are computed from
    the unchecked inputs with shape-safe ops, and the values leave through one tf.cond whose
    failing branch produces only after its failing assert, so nothing downstream can fail first
    with an obscure message. Two traps avoided: the failing branch returns zeros, not the values
    (an output both branches pass through unchanged may be forwarded around the cond), and
    callers declare static shapes with ``static`` (set_shape), not tf.ensure_shape, whose
    EnsureShape on the cond output was seen to run before the branch's assert (TF 2.21).
    """
    single = not isinstance(values, (tuple, list))
    values = [values] if single else list(values)
    ok = tf.constant(True)
    message = tf.constant("")
    for cond, text in reversed(checks):
        message = tf.where(cond, message, tf.constant(text))
    for cond, _ in checks:
        ok = tf.logical_and(ok, cond)

    def passed():
        return [tf.identity(v) for v in values]

    def failed():
        with tf.control_dependencies([tf.debugging.Assert(ok, [message, *data], summarize=16)]):
            return [tf.zeros_like(v) for v in values]

    out = tf.cond(ok, passed, failed)
    return out[0] if single else tuple(out)


class GeneratorServing(tf.Module):
    """tf.Module around a Keras ``Generator`` whose tf.functions are the SavedModel's signatures."""

    def __init__(self, generator, w_avg, randomize_noise=False, max_batch=DEFAULT_MAX_BATCH, jit_compile=False,
                 name="generator_serving"):
        super().__init__(name=name)
        # The Keras model is used, not tracked: its KerasVariables would be saved next to the
        # tf.Variables they wrap (twice the weights on disk). The functions capture the
        # tf.Variables, tracked in `model_variables` below.
        self._setattr_tracking = False
        self.generator = generator
        self._setattr_tracking = True
        self.style_dim = int(generator.style_dim)
        self.n_latent = int(generator.n_latent)
        self.size = int(generator.size)
        self.randomize_noise = bool(randomize_noise)
        self.max_batch = int(max_batch)
        self.jit_compile = bool(jit_compile)
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}.")
        w_avg = np.asarray(w_avg, np.float32).reshape(1, -1)
        if w_avg.shape[1] != self.style_dim:
            raise ValueError(f"w_avg has {w_avg.shape[1]} entries, the generator's style_dim is {self.style_dim}.")
        self.w_avg = tf.Variable(w_avg, trainable=False, name="w_avg")
        # Keras 3 variables wrap tf.Variables; track those so that tf.saved_model.save finds every capture.
        self.model_variables = [v.value if hasattr(v, "value") else v for v in generator.variables]
        d, nl, mb = self.style_dim, self.n_latent, self.max_batch
        any_spec = tf.TensorSpec(None, tf.float32)

        # --- validation ----------------------------------------------------------------------------
        # TF Serving feeds tensors without checking them against the signature's shapes, so each
        # input is checked in the graph, through `guard`, by functions traced with unknown shapes.
        # Inputs first pass SerializeTensor -> ParseTensor (`opaque`), whose output shape no shape
        # inference knows: called from a signature with static shapes, the check functions are
        # otherwise specialized by Grappler (the rank of a [None, d] argument "is" 2) and the rank
        # checks folded away (seen when calling the loaded SavedModel from TF2 Python).
        def opaque(x):
            return tf.io.parse_tensor(tf.io.serialize_tensor(x), x.dtype)

        def dims(x, n):
            """The first n dims of x, -1 past its rank (safe to index whatever the rank)."""
            return tf.concat([tf.shape(x), -tf.ones([n], tf.int32)], 0)[:n]

        def batch_ok(x):
            n = dims(x, 1)[0]
            return tf.logical_and(n >= 1, n <= mb)

        def batch_check(x, name):
            return batch_ok(x), f"{name}: the batch must hold 1 to {mb} items (max_batch); got shape"

        def value_checks(x, name):
            """Finite, then within MAX_ABS_LATENT (NaN fails both comparisons, so the first message names it)."""
            return [(tf.reduce_all(tf.math.is_finite(x)), f"{name} must be finite; got shape"),
                    (tf.reduce_all(tf.abs(x) <= MAX_ABS_LATENT),
                     f"{name} entries must be in [-{MAX_ABS_LATENT:g}, {MAX_ABS_LATENT:g}]; got shape")]

        def w_checks(w, name):
            shape = dims(w, 3)
            ok = tf.logical_and(tf.equal(tf.rank(w), 3), tf.logical_and(
                tf.logical_or(tf.equal(shape[1], nl), tf.equal(shape[1], 1)), tf.equal(shape[2], d)))
            return [(ok, f"{name} must be float32 [N, {nl} (W+) or 1 (W), {d}]; got shape"),
                    batch_check(w, name), *value_checks(w, name)]

        @tf.function(input_signature=[any_spec])
        def checked_z(z):
            z = opaque(z)
            ok = tf.logical_and(tf.equal(tf.rank(z), 2), tf.equal(dims(z, 2)[1], d))
            z = guard(z, [(ok, f"z must be float32 [N, {d}]; got shape"), batch_check(z, "z"), *value_checks(z, "z")],
                      tf.shape(z))
            return static(z, [None, d])

        @tf.function(input_signature=[tf.TensorSpec(None, tf.int64)])
        def checked_seeds(seeds):
            seeds = opaque(seeds)
            seeds = guard(seeds, [(tf.equal(tf.rank(seeds), 1), "seeds must be int64 [N]; got shape"),
                                  batch_check(seeds, "seeds")], tf.shape(seeds))
            return static(seeds, [None])

        @tf.function(input_signature=[any_spec])
        def checked_psi(psi):
            psi = opaque(psi)
            psi = guard(psi, [(tf.equal(tf.rank(psi), 0), "truncation_psi must be a float32 scalar; got"),
                              (tf.reduce_all(tf.logical_and(psi >= 0.0, psi <= 1.0)),
                               "truncation_psi must be in [0, 1]; got")], psi)
            return static(psi, [])

        @tf.function(input_signature=[any_spec])
        def checked_w(w):
            w = opaque(w)
            return static(guard(w, w_checks(w, "w"), tf.shape(w)), [None, None, d])

        @tf.function(input_signature=[any_spec, any_spec, tf.TensorSpec(None, tf.int32),
                                      tf.TensorSpec(None, tf.int32)])
        def checked_mix(w1, w2, start, end):
            w1, w2, start, end = opaque(w1), opaque(w2), opaque(start), opaque(end)
            scalars = tf.logical_and(tf.equal(tf.rank(start), 0), tf.equal(tf.rank(end), 0))
            in_range = tf.reduce_all(tf.logical_and(tf.logical_and(start >= 0, start <= end), end <= nl))
            checks = w_checks(w1, "w1") + w_checks(w2, "w2") + [
                (tf.equal(dims(w1, 1)[0], dims(w2, 1)[0]), "w1 and w2 must hold the same number of latents"),
                (scalars, "layer_start and layer_end must be int32 scalars"),
                (in_range, f"need 0 <= layer_start <= layer_end <= n_latent = {nl}")]
            w1, w2, start, end = guard((w1, w2, start, end), checks, tf.shape(w1), tf.shape(w2), start, end)
            return (static(w1, [None, None, d]), static(w2, [None, None, d]),
                    static(start, []), static(end, []))

        # --- generation --------------------------------------------------------------------------
        @tf.function(input_signature=[tf.TensorSpec([None, nl, d], tf.float32)], jit_compile=self.jit_compile)
        def synthesize(wplus):
            image = self.generator(wplus, input_is_latent=True, randomize_noise=self.randomize_noise)
            return images_to_uint8(image)

        def truncate(w, psi):
            w_avg = self.w_avg[:, None, :] if w.shape.rank == 3 else self.w_avg
            # psi = 1 passes w through untouched (exact), otherwise w_avg + psi (w - w_avg).
            return tf.where(tf.equal(psi, 1.0), w, w_avg + psi * (w - w_avg))

        def to_wplus(w):
            return tf.broadcast_to(w, tf.stack([tf.shape(w)[0], nl, d])) if w.shape.rank == 3 else \
                tf.tile(w[:, None, :], [1, nl, 1])

        def from_z(z, psi):
            w = truncate(self.generator.mapping(z), psi)
            return {"images": synthesize(to_wplus(w))}

        one = tf.constant(1.0, tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None, d], tf.float32, name="z"),
                                      tf.TensorSpec([], tf.float32, name="truncation_psi")])
        def serving_default(z, truncation_psi=one):
            return from_z(checked_z(z), checked_psi(truncation_psi))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="seeds"),
                                      tf.TensorSpec([], tf.float32, name="truncation_psi")])
        def from_seeds(seeds, truncation_psi=one):
            return from_z(z_from_seeds(checked_seeds(seeds), d), checked_psi(truncation_psi))

        @tf.function(input_signature=[tf.TensorSpec([None, None, d], tf.float32, name="w"),
                                      tf.TensorSpec([], tf.float32, name="truncation_psi")])
        def from_w(w, truncation_psi=one):
            w = truncate(checked_w(w), checked_psi(truncation_psi))
            return {"images": synthesize(to_wplus(w))}

        @tf.function(input_signature=[tf.TensorSpec([None, None, d], tf.float32, name="w1"),
                                      tf.TensorSpec([None, None, d], tf.float32, name="w2"),
                                      tf.TensorSpec([], tf.int32, name="layer_start"),
                                      tf.TensorSpec([], tf.int32, name="layer_end"),
                                      tf.TensorSpec([], tf.float32, name="truncation_psi")])
        def style_mix(w1, w2, layer_start, layer_end, truncation_psi=one):
            w1, w2, start, end = checked_mix(w1, w2, layer_start, layer_end)
            psi = checked_psi(truncation_psi)
            w1, w2 = to_wplus(truncate(w1, psi)), to_wplus(truncate(w2, psi))
            rows = tf.range(nl)[None, :, None]
            take2 = tf.logical_and(rows >= start, rows < end)
            return {"images": synthesize(tf.where(take2, w2, w1))}

        @tf.function(input_signature=[tf.TensorSpec([None, d], tf.float32, name="z")])
        def mapping(z):
            return {"w": self.generator.mapping(checked_z(z))}

        self.serving_default = serving_default
        self.from_seeds = from_seeds
        self.from_w = from_w
        self.style_mix = style_mix
        self.mapping = mapping

    def signatures(self):
        return {name: getattr(self, name) for name in SIGNATURE_NAMES}

    def metadata(self):
        return {"size": self.size, "style_dim": self.style_dim, "n_latent": self.n_latent,
                "max_batch": self.max_batch, "randomize_noise": self.randomize_noise,
                "jit_compile": self.jit_compile, "signatures": list(SIGNATURE_NAMES),
                "max_abs_latent": MAX_ABS_LATENT,
                "seed_to_z": "tf.random.stateless_normal([style_dim], seed=[seed, 0], alg='philox')",
                "tensorflow": tf.__version__}


def compute_w_avg(generator, latent_avg=None, n_samples=4096, seed=0):
    """The checkpoint's ``latent_avg`` when given, else ``generator.mean_latent(n_samples, seed)``; [1, style_dim]."""
    if latent_avg is not None:
        return np.asarray(latent_avg, np.float32).reshape(1, -1), "checkpoint latent_avg"
    return (np.asarray(generator.mean_latent(n_samples, seed), np.float32),
            f"mean of w over {n_samples} z (stateless seed {seed})")


def next_version(model_dir):
    """1 + the largest numeric version directory under ``model_dir`` (1 when there is none)."""
    model_dir = Path(model_dir)
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)] \
        if model_dir.exists() else []
    return max(versions, default=0) + 1


def export_saved_model(generator, model_dir, version=None, latent_avg=None, w_avg_samples=4096, w_avg_seed=0,
                       randomize_noise=False, max_batch=DEFAULT_MAX_BATCH, jit_compile=False, overwrite=False,
                       check_ops=True):
    """Writes ``model_dir/<version>/`` (SavedModel + ``assets.extra/tf_distill_export.json``); returns its path.

    The SavedModel is written to a hidden sibling (``outputs.staged_directory``), checked for non-stock ops,
    then renamed into place, so a model server polling ``model_dir`` never sees a partial or rejected version,
    and an overwritten version is replaced only once the new one is complete.
    """
    from tf_distill.export import stock_ops  # pylint: disable=import-outside-toplevel

    model_dir = Path(model_dir)
    version = next_version(model_dir) if version is None else int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer (TF Serving serves numeric directories), got {version}.")
    final = model_dir / str(version)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists; pick another --version or pass --overwrite.")
    w_avg, w_avg_source = compute_w_avg(generator, latent_avg, w_avg_samples, w_avg_seed)
    with staged_directory(final) as out:
        # Stock ops only (no custom ops in the graph); the weights are fixed from here on, so what depends on
        # them alone is traced as constants.
        with ops.implementation("ref"), frozen_weights(True):
            module = GeneratorServing(generator, w_avg, randomize_noise=randomize_noise, max_batch=max_batch,
                                      jit_compile=jit_compile)
            tf.saved_model.save(module, str(out), signatures=module.signatures())
        report = stock_ops.check_saved_model(out) if check_ops else None
        extra = out / "assets.extra"
        extra.mkdir(exist_ok=True)
        meta = {**module.metadata(), "version": version, "w_avg_source": w_avg_source}
        if report is not None:
            meta["ops"] = sorted(report["ops"])
        (extra / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return final


def read_metadata(version_dir):
    """The export's ``assets.extra/tf_distill_export.json``."""
    return json.loads((Path(version_dir) / "assets.extra" / METADATA_FILE).read_text())
