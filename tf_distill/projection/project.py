"""Projection of real images into a generator's W+ and noise maps (spec D.3, CAGAN/StyleKD ``get_psnr.py``).

Per image, as the reference:

* variables: W+ ``[1, n_latent, style_dim]`` initialised to ``w_avg`` (mean of ``mapping(z)`` over
  ``w_avg_samples`` = 1000 random z) repeated over all rows, and every noise map (``num_layers``
  of them) drawn fresh from N(0, 1); all optimised, no noise regularisation. The generator is frozen.
* loss: ``mean((out - target)^2)`` on the raw output ``+`` LPIPS-VGG(``clamp(out)``, ``clamp(target)``),
  both images resized bilinearly to 256 first when larger (summed over the batch).
* optimizer: :class:`FullBatchLBFGS` (lr 1, history 10, Wolfe, max_ls 10): one initial
  closure, then ``steps`` iterations (the paper: 801), or Adam as an alternative.
* metrics: LPIPS(target, raw output) at <= 256 px and both PSNRs of the uint8 reconstruction:
  ``psnr_paper`` (the reference's uint8 wrap-around, comparable with the paper's table) and
  ``psnr_correct`` (the true PSNR).

Images are projected one at a time (the reference's batch of 1): L-BFGS over a batch would share
one line search between images.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import tensorflow as tf

from tf_distill.images import read_rgb
from tf_distill.outputs import atomic_path
from tf_distill.metrics.psnr import projection_psnr, psnr, psnr_wraparound, to_uint8_reference
from tf_distill.projection.lbfgs import FullBatchLBFGS

PAPER_STEPS = 801
DEFAULT_STEPS = 100  # CPU-friendly default of the binary; the paper uses PAPER_STEPS
LPIPS_SIZE = 256
OPTIMIZERS = ("lbfgs", "adam")


@dataclasses.dataclass
class Projection:
    """Result for one image (arrays with a leading batch dimension of 1)."""
    wplus: np.ndarray            # [1, n_latent, style_dim]
    noise: List[np.ndarray]      # num_layers maps [1, r, r, 1]
    image: np.ndarray            # reconstruction [1, H, W, 3] in [-1, 1] (raw generator output)
    psnr_paper: float            # uint8 wrap-around PSNR, as the paper's table
    psnr_correct: float          # true PSNR of the same uint8 images
    lpips: float
    losses: List[float]          # loss after the initial closure and after every step
    closure_evals: int = 0
    failed_line_searches: int = 0

    def metrics(self):
        return {"psnr_paper": self.psnr_paper, "psnr_correct": self.psnr_correct, "lpips": self.lpips,
                "final_loss": self.losses[-1], "steps": len(self.losses) - 1}


def load_target(path, size):
    """An image file -> uint8 [1, size, size, 3] (:class:`tf_distill.images.UnreadableImageError` if unreadable)."""
    return fit_target(read_rgb(path), size)


def fit_target(image, size):
    """uint8 [H, W, 3] -> uint8 [1, size, size, 3] as the reference (PIL RGB, ``resize`` bicubic)."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC), np.uint8)
    return image[None]


def _resize_max(x, size=LPIPS_SIZE):
    return x if x.shape[1] <= size else tf.image.resize(x, [size, size], method="bilinear", antialias=False)


def projection_metrics(output, target_uint8, lpips):
    """(psnr_paper, psnr_correct, lpips) per image of raw outputs [-1, 1] vs uint8 targets."""
    target = tf.cast(target_uint8, tf.float32) / 127.5 - 1.0
    d = lpips(_resize_max(target), _resize_max(tf.convert_to_tensor(output, tf.float32)))
    return (projection_psnr(output, target_uint8, "paper").numpy(), projection_psnr(output, target_uint8,
                                                                                     "correct").numpy(), d.numpy())


def content_aware_metrics(output, target_uint8, lpips, mask):
    """The reference's content-aware variants: PSNR (paper and correct) and LPIPS of both images times ``mask``.

    ``mask`` [N, H, W, 1] is the face-parsing mask of the target (``losses.content_mask``), which
    zeroes background and cloth in both images, as the KD losses do; returns a dict of ``*_ca``.
    """
    mask = tf.convert_to_tensor(mask, tf.float32)
    out_u8 = tf.cast(to_uint8_reference(output), tf.float32) * mask
    target_u8 = tf.cast(target_uint8, tf.float32) * mask
    target = (tf.cast(target_uint8, tf.float32) / 127.5 - 1.0) * mask
    d = lpips(_resize_max(target), _resize_max(tf.convert_to_tensor(output, tf.float32) * mask))
    return {"psnr_paper_ca": float(psnr_wraparound(target_u8, out_u8).numpy()[0]),
            "psnr_correct_ca": float(psnr(target_u8, out_u8).numpy()[0]), "lpips_ca": float(d.numpy()[0])}


class Projector:
    """Projects images into one generator. Builds the compiled loss once; call :meth:`project`.

    Args:
      generator: a :class:`tf_distill.models.Generator` (left untouched).
      lpips: an LPIPS model (``tf_distill.metrics.lpips.LPIPS()``).
      optimizer: ``"lbfgs"`` (the reference) or ``"adam"``.
      lr: L-BFGS initial step (1) or Adam learning rate (default 0.1).
      w_avg_samples: z samples for the W+ initialisation (1000 as the reference).
      mse_weight, lpips_weight: loss weights (1, 1).
      max_ls, history_size: L-BFGS options (10, 10).
    """

    def __init__(self, generator, lpips, optimizer="lbfgs", lr=None, w_avg_samples=1000, mse_weight=1.0,
                 lpips_weight=1.0, max_ls=10, history_size=10, seed=0, jit_compile=False):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        self.g, self.lpips = generator, lpips
        self.optimizer = optimizer
        self.lr = float(lr if lr is not None else (1.0 if optimizer == "lbfgs" else 0.1))
        self.mse_weight, self.lpips_weight = float(mse_weight), float(lpips_weight)
        self.max_ls, self.history_size, self.seed = int(max_ls), int(history_size), int(seed)
        self.w_avg = generator.mean_latent(w_avg_samples, seed=seed)  # [1, style_dim]
        size = generator.size
        self.wplus = tf.Variable(tf.zeros([1, generator.n_latent, generator.style_dim]), name="wplus")
        self.noise = [tf.Variable(tf.zeros([1, r, r, 1]), name=f"noise_{j}")
                      for j, r in enumerate(generator.synthesis.noise_shapes())]
        self.variables = [self.wplus, *self.noise]
        self.target = tf.Variable(tf.zeros([1, size, size, 3]), trainable=False, name="target")
        self._loss_and_grad = tf.function(self._loss_and_grad_impl, jit_compile=jit_compile)
        self._render = tf.function(lambda: self.g(self.wplus, input_is_latent=True, noise=self.noise))

    def loss(self, output, target):
        """MSE(raw out, target) + LPIPS(clamp(out), clamp(target)) at <= 256 px, summed over the batch."""
        mse = tf.reduce_mean(tf.square(output - target))
        clamp = lambda x: _resize_max(tf.clip_by_value(x, -1.0, 1.0))
        return self.mse_weight * mse + self.lpips_weight * tf.reduce_sum(self.lpips(clamp(output), clamp(target)))

    def _loss_and_grad_impl(self):
        with tf.GradientTape() as tape:
            out = self.g(self.wplus, input_is_latent=True, noise=self.noise)
            loss = self.loss(out, self.target)
        return loss, tape.gradient(loss, self.variables)

    def reset(self, target_uint8, seed):
        """Sets the target and initial point: W+ = w_avg on every row, noise ~ N(0, 1)."""
        self.target.assign(tf.cast(target_uint8, tf.float32) / 127.5 - 1.0)
        self.wplus.assign(tf.tile(self.w_avg[:, None, :], [1, self.g.n_latent, 1]))
        for j, v in enumerate(self.noise):
            v.assign(tf.random.stateless_normal(v.shape, seed=[seed, j]))

    def project(self, target_uint8, steps=DEFAULT_STEPS, seed=None, progress: Optional[Callable] = None):
        """Projects one uint8 image [1, H, W, 3] (H = generator size). Returns a :class:`Projection`."""
        target_uint8 = np.asarray(target_uint8, np.uint8)
        if target_uint8.shape != (1, self.g.size, self.g.size, 3):
            raise ValueError(f"target must be uint8 [1, {self.g.size}, {self.g.size}, 3], got {target_uint8.shape}")
        self.reset(target_uint8, self.seed if seed is None else seed)
        losses, evals, fails = self._run_lbfgs(steps, progress) if self.optimizer == "lbfgs" else \
            self._run_adam(steps, progress)
        image = self._render().numpy()
        p_paper, p_correct, d = projection_metrics(image, target_uint8, self.lpips)
        return Projection(self.wplus.numpy(), [v.numpy() for v in self.noise], image, float(p_paper[0]),
                          float(p_correct[0]), float(d[0]), losses, evals, fails)

    def _run_lbfgs(self, steps, progress):
        opt = FullBatchLBFGS(self.variables, lr=self.lr, history_size=self.history_size, line_search="Wolfe")
        closure = self._loss_and_grad
        loss, grad = opt.closure_eval(closure)
        losses, evals, fails = [loss], 1, 0
        for _ in range(steps):
            r = opt.step(closure, loss, grad, max_ls=self.max_ls)
            loss, grad = r.loss, r.grad
            losses.append(loss)
            evals += r.closure_evals
            fails += int(r.fail)
            if progress is not None:
                progress(1)
        return losses, evals, fails

    def _run_adam(self, steps, progress):
        import keras  # pylint: disable=import-outside-toplevel

        opt = keras.optimizers.Adam(learning_rate=self.lr)
        loss, grads = self._loss_and_grad()
        losses = [float(loss)]
        for _ in range(steps):
            opt.apply_gradients(zip(grads, self.variables))
            loss, grads = self._loss_and_grad()
            losses.append(float(loss))
            if progress is not None:
                progress(1)
        return losses, steps + 1, 0


def project_images(generator, targets, lpips, steps=DEFAULT_STEPS, optimizer="lbfgs", seed=0, progress=None,
                   **kwargs):
    """Projects a list of uint8 images [1, H, W, 3] (one at a time) -> list of :class:`Projection`.

    Image ``i`` uses noise seed ``seed + i``.
    """
    projector = Projector(generator, lpips, optimizer=optimizer, seed=seed, **kwargs)
    return [projector.project(t, steps=steps, seed=seed + i, progress=progress) for i, t in enumerate(targets)]


def save_projection(path, projections_by_model):
    """Writes ``{model}_wplus`` and ``{model}_noise_{j}`` of each model's projection to one ``.npz``."""
    arrays = {}
    for model, p in projections_by_model.items():
        arrays[f"{model}_wplus"] = p.wplus
        for j, n in enumerate(p.noise):
            arrays[f"{model}_noise_{j}"] = n
    path = Path(path)
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    return path


def load_projection(path, model):
    """(wplus [1, n_latent, D], noise list or None) of ``model`` from a :func:`save_projection` file."""
    data = np.load(path)
    key = f"{model}_wplus"
    if key not in data.files:
        models = sorted({k.rsplit("_wplus", 1)[0] for k in data.files if k.endswith("_wplus")})
        raise KeyError(f"{path} has no projection for {model!r} (has {models}).")
    noise, j = [], 0
    while f"{model}_noise_{j}" in data.files:
        noise.append(data[f"{model}_noise_{j}"])
        j += 1
    return data[key], (noise or None)
