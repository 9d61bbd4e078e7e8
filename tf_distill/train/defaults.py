"""Default training configuration: every constant of the paper's run (spec C.4-C.6) in one place.

Experiment files under ``configs/`` start from :func:`default_config` and override what differs.
The range of every key is checked when a run starts (tf_distill.train.config_check).
"""

import ml_collections

from tf_distill.models.generator import generator_defaults
from tf_distill.train.optim import EMA_DECAY

# The config's generator keys take the Generator constructor's defaults (models.generator.generator_defaults).
_GENERATOR_KEYS = ("style_dim", "n_mlp", "channel_multiplier", "lr_mlp", "kernel_size", "mapping_lr_mul")


def default_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.strategy = "default"          # default | mirrored | multi_worker
    c.teacher = ""                  # teacher checkpoint (.pt, our dir or .keras); "" trains a plain StyleGAN2
    c.init_from = ""                # CAGAN-style init (the reference's --load 1): g, g_ema and d from this
                                    # pruned checkpoint (.pt or our dir); "" starts from a random student
    c.generator = ml_collections.ConfigDict({  # the trained generator (student, or teacher when c.teacher == "")
        "size": 256, **{key: generator_defaults()[key] for key in _GENERATOR_KEYS},
        "channels": ml_collections.FieldReference(None, field_type=tuple),
        "mapping_widths": ml_collections.FieldReference(None, field_type=tuple)})
    c.discriminator = ml_collections.ConfigDict({
        "channel_multiplier": 2, "channels": ml_collections.FieldReference(None, field_type=tuple)})
    # "folder:PATH", "tfrecord:GLOB" or "fashion_mnist[:train|test[:PATH]]" (tf_distill.data.DataSource)
    # sharding between workers: "files" (disjoint shards) or "data" (every worker reads the whole
    # stream and keeps its rows: the same batches for any number of workers; tf_distill.data.make_dataset)
    c.data = ml_collections.ConfigDict({"source": "", "flip": True, "sharding": "files"})
    c.train = ml_collections.ConfigDict({
        "steps": 450001, "batch_size": 16, "lr": 0.002, "r1": 10.0, "d_reg_every": 16, "g_reg_every": 4,
        "path_reg": 2.0, "path_batch_shrink": 2, "path_decay": 0.01, "mixing": 0.9, "ema_decay": EMA_DECAY,
        "gan": True})
    c.kd = ml_collections.ConfigDict({
        "weight_l1": 3.0, "weight_lpips": 3.0, "weight_relation": 30.0, "relation_mode": "kl", "single_view": False,
        "mimic_layers": (4, 5, 6), "offset_mode": "main", "direction_mode": "split", "offset_weight": 5.0,
        "group_size": 4, "warmup_steps": 0, "shared_noise": False, "lpips_size": 256, "load_style": True,
        # RGB L1 on the final image only ("output_only", the paper's runs) or summed over every RGB skip
        "mode": "output_only",
        # the reference's content-aware mask: face parsing (BiSeNet, face-parsing.PyTorch's 79999_iter.pth)
        # of the teacher's image keeps L1/LPIPS off background and cloth
        "content_mask": "off", "face_parsing_weights": ""})
    c.stage1 = ml_collections.ConfigDict({"steps": 0, "batch_size": 4096, "lr": 0.05, "loss": "l1"})
    c.log = ml_collections.ConfigDict({"every": 50, "checkpoint_every": 1000, "sample_every": 1000,
                                       "n_samples": 16, "keep_checkpoints": 3})
    c.eval = ml_collections.ConfigDict({"fid_every": 0, "fid_samples": 50000, "fid_batch": 64})
    return c
