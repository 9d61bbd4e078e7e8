"""The paper's experiments as named suites: rows are training-config overrides of the full StyleKD run.

Every row of a suite starts from the same base config (the paper's full loss, ``rgb_lpips_ld_kl``)
and changes exactly the terms its name says, so the suites run unchanged on any base config (the
Fashion-MNIST demo scale, or FFHQ 256 on GPUs).

- ``table1``: the supplementary's Table 1 ablation (GAN on, the teacher's mapping copied), plus
  ``scratch``: the same student trained as a plain StyleGAN2 without a teacher.
- ``fig1``: Fig. 1 / section 2, distillation without the GAN loss (no discriminator, no path-length
  regularizer): RGB L1 + LPIPS on (z, teacher(z)), with the teacher's mapping copied, with the
  student's own random mapping trained jointly, or with it mimicking the teacher's first (stage 1).
"""

import ml_collections

NO_GAN = {"train.gan": False, "train.path_reg": 0.0, "kd.weight_relation": 0.0}

SUITES = {
    "table1": {
        "rgb": {"kd.weight_lpips": 0.0, "kd.weight_relation": 0.0},
        "rgb_random_offset_kl": {"kd.weight_lpips": 0.0, "kd.offset_mode": "random"},
        "rgb_single_view_kl": {"kd.weight_lpips": 0.0, "kd.single_view": True},
        "rgb_ld_l2": {"kd.weight_lpips": 0.0, "kd.relation_mode": "mse"},
        "rgb_ld_kl": {"kd.weight_lpips": 0.0},
        "rgb_lpips": {"kd.weight_relation": 0.0},
        "rgb_lpips_ld_l2": {"kd.relation_mode": "mse"},
        "rgb_lpips_ld_kl": {},
        "scratch": {"teacher": ""},
    },
    "fig1": {
        "nogan_teacher_mapping": dict(NO_GAN),
        "nogan_random_mapping": dict(NO_GAN, **{"kd.load_style": False}),
        "nogan_mimic_mapping": dict(NO_GAN, **{"kd.load_style": False, "stage1.steps": "mimic_steps"}),
    },
}

#: The paper's FID of each Table 1 row (supplementary, FFHQ 256, 50k samples).
PAPER_TABLE1_FID = {"rgb": 9.41, "rgb_random_offset_kl": 9.80, "rgb_single_view_kl": 9.47, "rgb_ld_l2": 9.16,
                    "rgb_ld_kl": 9.05, "rgb_lpips": 8.61, "rgb_lpips_ld_l2": 8.64, "rgb_lpips_ld_kl": 8.26}


def row_overrides(suite, row, mimic_steps=0):
    """The flattened config overrides of ``row`` in ``suite`` (``"mimic_steps"`` resolved)."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {sorted(SUITES)}.")
    if row not in SUITES[suite]:
        raise ValueError(f"suite {suite!r} has no row {row!r}; its rows: {', '.join(SUITES[suite])}.")
    return {k: (mimic_steps if v == "mimic_steps" else v) for k, v in SUITES[suite][row].items()}


def resolve_config(base, overrides, seed):
    """A copy of the training config ``base`` with ``overrides`` (flattened keys) and ``seed`` applied."""
    config = ml_collections.ConfigDict(base.to_dict())
    config.update_from_flattened_dict(dict(overrides))
    config.seed = int(seed)
    return config
