"""Metrics of a suite's runs, all from a generator (the student's EMA copy) and shared references.

Per run: FID against real images, FID against the teacher's samples, LPIPS student-to-teacher on
shared z and noise, and diversity (mean LPIPS between samples of distinct z, Fig. 1's collapse
measure). The real and teacher statistics are computed once per suite workdir and cached.
"""

from pathlib import Path

import numpy as np

from tf_distill.metrics import generator_eval
from tf_distill.metrics.fid import load_statistics, save_statistics
from tf_distill.progress import Progress

GRID_SEED = 31337
REFERENCE_SEED = 1  # the teacher sample set that FID-vs-teacher compares against
SAMPLE_SEED = 7  # every generator's FID samples (the teacher's too: different from the reference set)


class SuiteEvaluator:
    """Evaluates generators of one resolution against the suite's real data and teacher.

    Args:
      workdir: where the cached statistics go (``real_<n>.npz``, ``teacher_<n>.npz``).
      source: the data source spec of the real images (the first ``eval.real_images`` are used).
      teacher: the teacher generator.
      eval_config: the ``eval`` section of a reproduction config.
      lpips, inception: shared networks.
    """

    def __init__(self, workdir, source, teacher, eval_config, lpips, inception):
        self.workdir, self.source, self.teacher, self.cfg = Path(workdir), source, teacher, eval_config
        self.lpips, self.inception = lpips, inception
        self._real = self._teacher_ref = None

    def _cached(self, name, compute):
        path = self.workdir / f"{name}.npz"
        if path.exists():
            return load_statistics(str(path))
        mu, sigma, n = compute()
        save_statistics(str(path), mu, sigma, n)  # atomically
        return mu, sigma

    def real_statistics(self):
        if self._real is None:
            n = self.cfg.real_images

            def compute():
                mu, sigma = generator_eval.dataset_statistics(
                    self.source, self.teacher.size, n, self.cfg.batch, inception=self.inception,
                    progress=Progress(n, "FID real images"))
                return mu, sigma, n

            self._real = self._cached(f"real_{n}", compute)
        return self._real

    def teacher_statistics(self):
        if self._teacher_ref is None:
            n = self.cfg.teacher_samples
            self._teacher_ref = self._cached(f"teacher_{n}", lambda: generator_eval.generator_statistics(
                self.teacher, n, self.cfg.batch, inception=self.inception, seed=REFERENCE_SEED,
                progress=Progress(n, "FID teacher reference set")))
        return self._teacher_ref

    def evaluate(self, generator, label):
        """The full metrics of ``generator`` (a dict of floats)."""
        cfg = self.cfg
        stats = generator_eval.generator_statistics(generator, cfg.fid_samples, cfg.batch, inception=self.inception,
                                                    seed=SAMPLE_SEED, progress=Progress(cfg.fid_samples, f"FID {label}"))
        return {
            "fid": generator_eval.fid_from_statistics(stats, self.real_statistics()),
            "fid_vs_teacher": generator_eval.fid_from_statistics(stats, self.teacher_statistics()),
            "lpips_to_teacher": generator_eval.lpips_between(generator, self.teacher, self.lpips, cfg.lpips_samples,
                                                             cfg.batch, seed=2, shared_noise=True),
            "diversity": generator_eval.diversity(generator, self.lpips, cfg.diversity_pairs, cfg.batch, seed=3),
        }

    def curve_point(self, generator, label):
        """The cheaper metrics of a training curve: FID on ``curve_fid_samples``, LPIPS to teacher."""
        cfg = self.cfg
        fid, _ = generator_eval.generator_fid(generator, self.real_statistics(), cfg.curve_fid_samples, cfg.batch,
                                              inception=self.inception, seed=SAMPLE_SEED,
                                              progress=Progress(cfg.curve_fid_samples, f"curve FID {label}"))
        lpips = generator_eval.lpips_between(generator, self.teacher, self.lpips, cfg.curve_lpips_samples, cfg.batch,
                                             seed=2, shared_noise=True)
        return {"fid": fid, "lpips_to_teacher": lpips}


def grid_samples(generator, count):
    """``count`` images on the suite's fixed z and noise maps (the same for every row), float32 [-1, 1]."""
    rng = np.random.default_rng(GRID_SEED)
    z = rng.standard_normal((count, generator.style_dim)).astype(np.float32)
    return np.asarray(generator(z, noise=generator_eval.noise_batch(rng, generator, count)))
