"""The student a generic distillation config derives from its teacher checkpoint (configs/distill.py).

A config with a ``student`` section (``prune_ratio``, ``channels``) leaves the generator's architecture
to the teacher: when the run starts, the student takes the teacher's resolution, style_dim, mapping
(depth, widths, lr multiplier) and kernel size, and per layer CAGAN's ``c - int(r * c)`` channels for
the prune ratio ``r`` (``prune.py``; 0 keeps the teacher's), or the explicit ``student.channels``. The
relation loss reads the three highest resolutions unless ``kd.mimic_layers`` is set. The resolved values
are written into the config, so the run's checkpoints and ``final/config.json`` hold them and a resume
derives the same student. The discriminator keeps its defaults: the standard channels for the
resolution, as the paper's stage 2 trains the pruned student against a full-width D.
"""

import math
from pathlib import Path

from tf_distill.errors import UserError
from tf_distill.io import checkpoints

#: The generator keys the teacher fixes: the student draws the teacher's z, copies its mapping
#: (``kd.load_style``) and is compared with it pixel for pixel.
FROM_TEACHER = ("size", "style_dim", "n_mlp", "lr_mlp", "kernel_size", "mapping_widths", "mapping_lr_mul")


def pruned_channels(channels, ratio):
    """CAGAN's rule: every layer keeps ``c - int(ratio * c)`` of its ``c`` channels."""
    return [c - int(ratio * c) for c in channels]


def resolve_student(config):
    """Fills ``config.generator`` (and an unset ``kd.mimic_layers``) from the teacher, in place.

    Does nothing for a config without a ``student`` section. Raises UserError on a missing teacher,
    a prune ratio outside [0, 1), a channel list of the wrong length, or a generator key set to a
    value the teacher contradicts.
    """
    if "student" not in config:
        return config
    student = config.student
    ratio = student.prune_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise UserError(f"config.student.prune_ratio must be a number in [0, 1), got {ratio!r} (the share of "
                        "each layer's channels the student drops: 0.7 as the paper, 0 keeps the teacher's)")
    if not config.teacher:
        raise UserError("configs/distill.py derives the student from its teacher, and config.teacher is not set "
                        "(give --config.teacher=PATH: a rosinality/CAGAN .pt, a .keras or a converted checkpoint "
                        "directory)")
    if not Path(config.teacher).exists():
        raise UserError(f"config.teacher {config.teacher!r} does not exist (give the path of a .pt, .keras or "
                        "converted checkpoint directory)")
    teacher = checkpoints.generator_config(config.teacher)  # the architecture only: the run builds the teacher
    derived = {key: teacher[key] for key in FROM_TEACHER}
    derived["channels"] = _student_channels(student, teacher["channels"])
    for key, value in derived.items():
        have = config.generator[key]
        if have is not None and have != value:
            raise UserError(f"config.generator.{key} is {have} but the teacher's gives {value} (configs/distill.py "
                            f"derives it from the teacher: leave --config.generator.{key} out; the student's "
                            "channels are --config.student.prune_ratio or --config.student.channels)")
        config.generator[key] = value
    if config.kd.mimic_layers is None:
        blocks = int(math.log2(teacher["size"])) - 2  # block m has resolution 2^(m+2)
        config.kd.mimic_layers = [m for m in (blocks - 2, blocks - 1, blocks) if m >= 1]
    return config


def _student_channels(student, teacher_channels):
    channels = student.channels
    if channels is None:
        return pruned_channels(teacher_channels, student.prune_ratio)
    if len(channels) != len(teacher_channels) or not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels):
        raise UserError(f"config.student.channels must list {len(teacher_channels)} integers >= 1, one per layer of "
                        f"the teacher (whose channels are {_flag(teacher_channels)}), got {_flag(channels)} (fix "
                        "--config.student.channels, or leave it out and set --config.student.prune_ratio)")
    return list(channels)


def _flag(values):
    return str(list(values)).replace(" ", "")
