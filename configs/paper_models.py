"""The generators of the paper's table (FFHQ 256 and 1024 teachers and CAGAN 0.7-pruned students).

    tf-distill-stats --config=configs/paper_models.py               # all four
    tf-distill-stats --config=configs/paper_models.py:ffhq256_student

The 0.7-pruned students keep ``c - int(0.7 c)`` channels of every layer (CAGAN ``prune.py``):
512 -> 154, 256 -> 77, 128 -> 39, 64 -> 20, 32 -> 10. Every other setting is the default generator's.
"""

import ml_collections

from tf_distill.train.defaults import default_config


def _generator(size, channels=None):
    g = default_config().generator
    g.update(size=size, channels=channels)
    return g


MODELS = {
    "ffhq256_teacher": lambda: _generator(256),
    "ffhq256_student": lambda: _generator(256, [154] * 10 + [77] * 2 + [39] * 2),
    "ffhq1024_teacher": lambda: _generator(1024),
    "ffhq1024_student": lambda: _generator(1024, [154] * 10 + [77] * 2 + [39] * 2 + [20] * 2 + [10] * 2),
}


def get_config(arg=None):
    """A ConfigDict of named generator configs; ``arg`` selects one (comma-separated for several)."""
    names = list(MODELS) if not arg else arg.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"Unknown model {unknown[0]!r}; choose from {sorted(MODELS)}.")
    return ml_collections.ConfigDict({"generators": {n: MODELS[n]() for n in names}})
