"""StyleKD on FFHQ 256: the paper's run (spec C.6) and the ablations of the supplementary's Table 1.

    tf-distill-train --config=configs/ffhq256_stylekd.py --workdir=runs/ffhq256 \
        --config.teacher=256px_full_size.pt --config.data.source=folder:/data/ffhq/images1024x1024
    tf-distill-train --config=configs/ffhq256_stylekd.py:rgb_lpips_ld_l2 ...   # an ablation

Variants (``:<variant>``): ``paper`` (= ``rgb_lpips_ld_kl``: RGB L1 x3 + LPIPS x3 + LD KL x30, mimic
layers 64/128/256), ``released_code`` (the release's default mimic layers 16/32/64/128), ``rgb``,
``rgb_random_offset_kl`` (random offset directions), ``rgb_single_view_kl``, ``rgb_ld_l2``, ``rgb_ld_kl``,
``rgb_lpips``, ``rgb_lpips_ld_l2``, ``no_gan`` (Fig. 1's no-GAN mode: no D, no path length, L1 + LPIPS),
``cagan_init`` (the reference's ``--load 1``: g, g_ema and d start from a CAGAN-pruned checkpoint
instead of a random synthesis and D, its mapping kept; the file is required)::

    tf-distill-train --config=configs/ffhq256_stylekd.py:cagan_init --config.init_from=pruned_0.7.pt ...

Student: CAGAN's 0.7-pruned channels; global batch 16 = the paper's 4 GPUs x 4. The reference's
content-aware mask (background and cloth left out of L1 and LPIPS) is on when the face-parsing
weights are given: ``--config.kd.face_parsing_weights=79999_iter.pth``.
"""

from ml_collections import config_dict

from tf_distill.configs.paper_models import MODELS
from tf_distill.reproduce.suites import SUITES
from tf_distill.train.defaults import default_config

VARIANTS = {
    "paper": {},
    "released_code": {"kd.mimic_layers": [2, 3, 4, 5]},
    # the Table 1 rows (tf_distill.reproduce.suites, the one definition the reproduction runner also uses)
    **{row: overrides for row, overrides in SUITES["table1"].items() if row != "scratch"},
    "no_gan": SUITES["fig1"]["nogan_teacher_mapping"],
    "cagan_init": {"kd.load_style": False},  # and config.init_from, required (with_variant)
}


def base_config(size_model="ffhq256_student"):
    """The paper's run (spec C.6) for a generator of configs/paper_models.py; the rest is default_config's."""
    c = default_config()
    c.generator.update(MODELS[size_model]().to_dict())
    c.kd.content_mask = "auto"  # the reference's face mask, on once --config.kd.face_parsing_weights=79999_iter.pth
    c.eval.fid_every = 10000
    c.log.checkpoint_every = 10000
    return c


def with_variant(config, variant):
    """``config`` with the overrides of ``variant`` (flattened keys) applied in place."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose from {sorted(VARIANTS)}.")
    config.update_from_flattened_dict(VARIANTS[variant])
    if variant == "cagan_init":  # no default file: a run without --config.init_from=PATH is refused
        config.init_from = config_dict.placeholder(str)
    return config


def get_config(variant="paper"):
    return with_variant(base_config(), variant)
