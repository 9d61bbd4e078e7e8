"""Metrics of generators as the paper evaluates them: FID of samples, LPIPS between two generators on the same z.

FID samples follow spec D.1: z ~ N(0, I), truncation 1, random noise, batches of ``batch_size``
with the remainder as a last smaller batch, raw output (``stylekd`` mode) or uint8-quantised
(``standard``), fed to the FID Inception through a streaming float64 accumulator.
"""

import numpy as np
import tensorflow as tf

from tf_distill.data import make_dataset, naming_damaged_files
from tf_distill.metrics.batching import call_nonempty
from tf_distill.metrics.fid import FIDAccumulator, accumulate, frechet_distance, load_statistics, save_statistics
from tf_distill.metrics.inception import FIDInceptionV3

#: A student that visibly resembles its teacher: LPIPS student-to-teacher and FID relative to the teacher's
#: at most these (the demo's targets, also checked on the reproduction suite's best row).
RESEMBLANCE_LPIPS = 0.20
RESEMBLANCE_FID_RATIO = 1.25


def sample_batches(num_samples, batch_size):
    """Batch sizes covering exactly ``num_samples`` (the reference's ``[bs] * (n // bs - 1) + [rest]``,
    with a rest larger than ``bs`` split in two so no batch exceeds ``bs``)."""
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be positive, got {num_samples}, {batch_size}.")
    full = max(num_samples // batch_size - 1, 0)
    sizes = [batch_size] * full
    rest = num_samples - full * batch_size
    while rest > 0:
        sizes.append(min(rest, batch_size))
        rest -= sizes[-1]
    return sizes


def generator_statistics(generator, num_samples=50000, batch_size=64, mode="stylekd", inception=None, seed=0,
                         strategy=None, progress=None):
    """``(mu, sigma, num_samples)`` (float64 NumPy) of the FID Inception features of ``generator``'s samples."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        inception = inception or FIDInceptionV3(mode=mode)
        acc = FIDAccumulator(inception)
    rng = tf.random.Generator.from_seed(seed)

    @tf.function
    def step(z):
        def replica(z_all):
            ctx = tf.distribute.get_replica_context()
            n, i = ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group
            size = tf.shape(z_all)[0]
            lo, hi = size * i // n, size * (i + 1) // n
            acc.update(call_nonempty(generator, z_all[lo:hi]))  # a replica's share may be empty

        strategy.run(replica, args=(z,))

    for size in sample_batches(num_samples, batch_size):
        step(rng.normal([size, generator.style_dim]))
        if progress is not None:
            progress(size)
    mu, sigma = acc.statistics()
    return mu.numpy(), sigma.numpy(), int(acc.num_samples().numpy())


def fid_from_statistics(stats_a, stats_b):
    """FID between two ``(mu, sigma, ...)`` tuples (float64, in-graph)."""
    return float(frechet_distance(*(tf.constant(np.asarray(t), tf.float64) for t in (*stats_a[:2], *stats_b[:2]))))


def generator_fid(generator, real_stats, num_samples=50000, batch_size=64, mode="stylekd", inception=None,
                  seed=0, strategy=None, progress=None):
    """(FID, num_samples) of ``generator``'s samples against ``(mu, sigma)`` of real images."""
    stats = generator_statistics(generator, num_samples, batch_size, mode, inception, seed, strategy, progress)
    return fid_from_statistics(stats, real_stats), stats[2]


def noise_batch(rng, generator, size):
    """Per-layer noise maps [size, r, r, 1] for ``generator``, drawn from the NumPy ``rng``."""
    return [rng.standard_normal((size, r, r, 1)).astype(np.float32) for r in generator.synthesis.noise_shapes()]


def lpips_between(g_a, g_b, lpips, num_samples=256, batch_size=32, seed=0, randomize_noise=False,
                  shared_noise=False):
    """Mean LPIPS between two generators' images for the same z.

    Noise: each generator's stored maps (default), fresh per call (``randomize_noise``), or
    ``shared_noise``: the same fresh maps for both generators (they must have the same resolution).
    """
    rng = np.random.default_rng(seed)
    distances = []
    for size in sample_batches(num_samples, batch_size):
        z = rng.standard_normal((size, g_a.style_dim)).astype(np.float32)
        kwargs = dict(randomize_noise=randomize_noise)
        if shared_noise:
            kwargs = dict(noise=noise_batch(rng, g_a, size))
        distances.append(lpips(g_a(z, **kwargs), g_b(z, **kwargs)))
    return float(np.mean(np.concatenate([np.asarray(d) for d in distances])))


def diversity(generator, lpips, num_pairs=250, batch_size=32, seed=0):
    """Mean LPIPS between samples of two distinct z (Fig. 1's collapse measure).

    Both images of a pair get the same noise maps, so only z differs: a generator that ignores z
    scores exactly 0, one whose samples are as varied as the data scores like the data.
    """
    rng = np.random.default_rng(seed)
    distances = []
    for size in sample_batches(num_pairs, batch_size):
        z = rng.standard_normal((2, size, generator.style_dim)).astype(np.float32)
        noise = noise_batch(rng, generator, size)
        distances.append(lpips(generator(z[0], noise=noise), generator(z[1], noise=noise)))
    return float(np.mean(np.concatenate([np.asarray(d) for d in distances])))


def dataset_statistics(source, resolution, num_images=None, batch_size=64, mode="stylekd", cache_path=None,
                       inception=None, progress=None):
    """(mu, sigma) of real images from a data source spec (folder/TFRecords/Fashion-MNIST), cached as .npz.

    Images go through the training pipeline without flips or shuffling (first ``num_images`` in
    order), at the generator's resolution, so real and fake statistics are taken alike.
    """
    if cache_path is not None and tf.io.gfile.exists(str(cache_path)):
        return load_statistics(str(cache_path))
    ds = make_dataset(source, resolution, batch_size, shuffle=False, flip=False, repeat=False)
    if num_images:
        ds = ds.unbatch().take(num_images).batch(batch_size)
    acc = FIDAccumulator(inception or FIDInceptionV3(mode=mode))
    with naming_damaged_files(source):
        accumulate(ds, acc, progress=progress)
    mu, sigma = (t.numpy() for t in acc.statistics())
    if cache_path is not None:
        save_statistics(str(cache_path), mu, sigma, int(acc.num_samples().numpy()))
    return mu, sigma
