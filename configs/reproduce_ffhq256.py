"""The reproduction suites at the paper's scale: FFHQ 256, the CAGAN teacher, the 0.7-pruned student.

    tf-distill-reproduce --config=configs/reproduce_ffhq256.py --suite=table1 --workdir=/data/runs/table1 \
        --config.base.teacher=256px_full_size.pt --config.base.data.source=folder:/data/ffhq/images1024x1024 \
        --config.base.strategy=mirrored

The base run is the paper's (configs/ffhq256_stylekd.py, 450k steps at batch 16); the evaluation is
the paper's FID (50k samples) against 50k real images, with LPIPS to the teacher and diversity on
5,000 z. Shorten a trial with ``--config.base.train.steps``.
"""

import ml_collections

from tf_distill.configs.ffhq256_stylekd import get_config as ffhq_config


def get_config():
    c = ml_collections.ConfigDict()
    c.base = ffhq_config("paper")
    c.base.eval.fid_every = 0  # the runner's curves replace the trainer's periodic FID
    c.seeds = 2
    c.seeds_per_row = {"rgb": 3, "rgb_lpips": 3, "rgb_lpips_ld_kl": 3, "scratch": 3}
    c.mimic_steps = 50000  # the supplementary's stage 1 (lr 0.05, batch 4096)
    c.eval = ml_collections.ConfigDict({
        "real_images": 50000, "teacher_samples": 50000, "fid_samples": 50000, "lpips_samples": 5000,
        "diversity_pairs": 2500, "batch": 64, "curve_points": 9, "curve_fid_samples": 10000,
        "curve_lpips_samples": 1000, "curve_rows": ("rgb", "rgb_lpips", "rgb_lpips_ld_kl", "scratch")})
    return c
