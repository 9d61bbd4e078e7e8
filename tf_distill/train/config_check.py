"""Checks a training config before anything is built, so a bad value fails at start and names its key.

Without it a bad value surfaces late or never: ``train.steps=-5`` writes an untrained ``final/``,
``log.every=0`` or ``kd.group_size=0`` end in a ZeroDivisionError mid-run, with no checkpoint.
"""

import math
from pathlib import Path

from tf_distill.data.pipeline import SHARDING
from tf_distill.data.source import DataSource
from tf_distill.errors import UserError, first_few
from tf_distill.limits import MAX_SEED
from tf_distill.losses.distill import KD_MODES
from tf_distill.models.generator import log2_size
from tf_distill.train.defaults import default_config
from tf_distill.train.strategy import STRATEGIES

RELATION_LOSSES = ("kl", "mse")
OFFSET_MODES = ("main", "random")
DIRECTION_MODES = ("split", "global")
STAGE1_LOSSES = ("l1", "l2")


class ConfigError(UserError):
    """A config value out of range; the message names every bad key."""


def check_config(config, num_replicas=None, prefix="config"):
    """Raises :class:`ConfigError` naming every bad key of a training config (see tf_distill.train.defaults).

    With ``num_replicas`` (None: not known yet) it also runs :func:`check_batch`. ``prefix``: how the user
    reaches the config's keys (``config.base`` inside a reproduction config).
    """
    config_problems(config, num_replicas, prefix).raise_if_any()


def config_problems(config, num_replicas=None, prefix="config"):
    """The :class:`Problems` of ``check_config`` (for callers that gather several configs' problems); raises
    :class:`ConfigError` right away only when keys are missing, where the rest cannot be checked."""
    missing = missing_keys(config, default_config())
    if missing:
        shown = first_few((f"{prefix}.{k}" for k in missing), 6)
        hint = "; it looks like a tf-distill-reproduce config, whose training config is config.base" \
            if "base" in config else ""
        raise ConfigError(f"the config lacks {len(missing)} key(s) every training config has: {shown} (build it "
                          f"on tf_distill.train.defaults.default_config(), as configs/*.py do{hint})")
    problems = Problems(config, prefix)
    _check_sections(problems, config)
    if num_replicas is not None and not problems:  # the batch checks need sane values to talk about
        _check_batch(problems, config, num_replicas)
    return problems


def missing_keys(config, reference, free=()):
    """The dotted keys of ``reference`` (a ConfigDict) that ``config`` lacks, nested sections included, except
    inside the top-level sections named in ``free`` (maps whose entries are the user's choice)."""
    missing = []
    for key, value in reference.items():
        if key not in config:
            missing.append(key)
        elif hasattr(value, "items") and not isinstance(value, dict) and key not in free:
            inner = config[key]
            missing.extend(f"{key}.{k}" for k in (missing_keys(inner, value) if hasattr(inner, "items")
                                                   else list(value.keys())))
    return missing


def check_batch(config, num_replicas):
    """The batch checks for a strategy's replica count (known only once the strategy exists)."""
    problems = Problems(config)
    _check_batch(problems, config, num_replicas)
    problems.raise_if_any()


def check_max_steps(max_steps):
    """``--max_steps`` (more iterations for this invocation) is None or >= 1."""
    if max_steps is not None and (not is_int(max_steps) or max_steps < 1):
        raise ConfigError(f"--max_steps must be >= 1, got {max_steps!r} (leave it out to train to "
                          "config.train.steps)")


class Problems(list):
    """The problems found in a config, each ``PREFIX.KEY must be RULE, got VALUE (FIX)``, raised as one
    :class:`ConfigError` (training configs here, a reproduction config's own keys in reproduce/runner.py)."""

    def __init__(self, config, prefix="config"):
        super().__init__()
        self.config, self.prefix = config, prefix

    def name(self, key):
        """``key`` as the user writes it (``config.train.lr``; its flag is ``--`` that)."""
        return f"{self.prefix}.{key}"

    def value(self, key):
        section, _, name = key.rpartition(".")
        node = self.config
        for part in section.split(".") if section else ():
            node = node[part]
        return node[name]

    def add(self, key, rule, fix=None):
        value = self.value(key)
        self.append(f"{self.name(key)} must be {rule}, got {value!r} ({fix or f'set --{self.name(key)}'})")

    def require(self, key, ok, rule, fix=None):
        """Adds a problem unless ``ok(value)``; returns whether the value passed."""
        try:
            passed = bool(ok(self.value(key)))
        except (TypeError, ValueError):
            passed = False
        if not passed:
            self.add(key, rule, fix)
        return passed

    def raise_if_any(self):
        if self:
            raise ConfigError("; ".join(self))


def is_int(v):
    """An int that is not a bool (True is an int to Python, not a step count to a user)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(low):
    return lambda v: is_int(v) and v >= low


def _number_in(low, high, low_open=False, high_open=False):
    def ok(v):
        return _is_number(v) and (v > low if low_open else v >= low) and (
            high is None or (v < high if high_open else v <= high))
    return ok


def _one_of(choices):
    return lambda v: v in choices


def _is_bool(v):
    return isinstance(v, bool)


_POSITIVE = _number_in(0, None, low_open=True)
_NON_NEGATIVE = _number_in(0, None)


def _check_sections(p, c):
    p.require("seed", lambda v: is_int(v) and 0 <= v <= MAX_SEED, f"an integer in [0, {MAX_SEED}]")
    p.require("strategy", _one_of(STRATEGIES), f"one of {list(STRATEGIES)}")
    p.require("teacher", lambda v: isinstance(v, str), 'a path or "" (no teacher)')
    if isinstance(c.teacher, str) and c.teacher and not Path(c.teacher).exists():
        p.append(f"{p.name('teacher')} {c.teacher!r} does not exist (give the path of a .pt, .keras or converted "
                 "checkpoint directory, or \"\" to train a plain StyleGAN2)")
    p.require("init_from", lambda v: isinstance(v, str), 'a path (a CAGAN-pruned .pt holding g, g_ema and d) or "" '
              "(a random student)", f"the cagan_init variant starts from one: set --{p.name('init_from')}=PATH")
    if isinstance(c.init_from, str) and c.init_from and not Path(c.init_from).exists():
        p.append(f"{p.name('init_from')} {c.init_from!r} does not exist (give the path of the CAGAN-pruned .pt, "
                 "or \"\" for a random student)")
    _check_generator(p)
    _check_data(p, c)

    p.require("train.steps", _int_at_least(1), "an integer >= 1 (the number of training iterations)")
    p.require("train.batch_size", _int_at_least(1), "an integer >= 1")
    p.require("train.lr", _POSITIVE, "a finite number > 0")
    for key in ("train.r1", "train.path_reg"):
        p.require(key, _NON_NEGATIVE, "a finite number >= 0 (0 turns it off)")
    for key in ("train.d_reg_every", "train.g_reg_every", "train.path_batch_shrink"):
        p.require(key, _int_at_least(1), "an integer >= 1")
    p.require("train.path_decay", _number_in(0, 1, low_open=True), "in (0, 1]",
              f"the reference uses 0.01; set --{p.name('train.path_decay')}")
    p.require("train.ema_decay", _number_in(0, 1, high_open=True), "in [0, 1)",
              f"0 copies G every step, the paper uses 0.9978; set --{p.name('train.ema_decay')}")
    p.require("train.mixing", _number_in(0, 1), "a probability in [0, 1]")
    p.require("train.gan", _is_bool, "True or False")

    for key in ("kd.weight_l1", "kd.weight_lpips", "kd.weight_relation", "kd.offset_weight"):
        p.require(key, _NON_NEGATIVE, "a finite number >= 0 (0 turns it off)")
    p.require("kd.relation_mode", _one_of(RELATION_LOSSES), f"one of {list(RELATION_LOSSES)}")
    p.require("kd.offset_mode", _one_of(OFFSET_MODES), f"one of {list(OFFSET_MODES)}")
    p.require("kd.direction_mode", _one_of(DIRECTION_MODES), f"one of {list(DIRECTION_MODES)}")
    p.require("kd.group_size", _int_at_least(1), "an integer >= 1 (the samples per relation matrix and "
              "per D minibatch-stddev group)")
    p.require("kd.warmup_steps", _int_at_least(0), "an integer >= 0")
    p.require("kd.lpips_size", _int_at_least(16), "an integer >= 16")
    p.require("kd.mode", _one_of(KD_MODES), f"one of {list(KD_MODES)}",
              f"set --{p.name('kd.mode')}=output_only as in the paper, or intermediate for L1 over every RGB skip")
    for key in ("kd.single_view", "kd.shared_noise", "kd.load_style", "data.flip"):
        p.require(key, _is_bool, "True or False")
    p.require("kd.content_mask", _one_of(CONTENT_MASK_MODES),
              'one of "on", "off", "auto" (on when kd.face_parsing_weights is given)')
    _check_mimic_layers(p, c)
    _check_content_mask(p, c)

    p.require("stage1.steps", _int_at_least(0), "an integer >= 0 (0 skips stage 1)")
    p.require("stage1.batch_size", _int_at_least(1), "an integer >= 1")
    p.require("stage1.lr", _POSITIVE, "a finite number > 0")
    p.require("stage1.loss", _one_of(STAGE1_LOSSES), f"one of {list(STAGE1_LOSSES)}")

    for key in ("log.every", "log.checkpoint_every", "log.sample_every", "log.n_samples", "log.keep_checkpoints"):
        p.require(key, _int_at_least(1), "an integer >= 1")
    p.require("eval.fid_every", _int_at_least(0), "an integer >= 0 (0 turns the periodic FID off)")
    if is_int(c.eval.fid_every) and c.eval.fid_every > 0:
        p.require("eval.fid_samples", _int_at_least(2), "an integer >= 2")
        p.require("eval.fid_batch", _int_at_least(1), "an integer >= 1")


def _check_generator(p):
    p.require("generator.size", lambda v: is_int(v) and log2_size(v), "a power of two >= 8")
    for key in ("generator.style_dim", "generator.n_mlp", "generator.channel_multiplier",
                "discriminator.channel_multiplier"):
        p.require(key, _int_at_least(1), "an integer >= 1")
    p.require("generator.kernel_size", lambda v: is_int(v) and v in (1, 3, 5, 7, 9),
              "an odd integer from 1 to 9 (the convs pad k // 2 on each side; StyleGAN2 uses 3)")
    for key in ("generator.lr_mlp", "generator.mapping_lr_mul"):
        p.require(key, _POSITIVE, "a finite number > 0")
    for key in ("generator.channels", "generator.mapping_widths", "discriminator.channels"):
        p.require(key, lambda v: v is None or (len(v) > 0 and all(is_int(x) and x >= 1 for x in v)),
                  "None (the standard layout) or a list of integers >= 1")


def _check_data(p, c):
    source = c.data.source
    if not source:
        p.append(f"{p.name('data.source')} is empty (set --{p.name('data.source')}=folder:PATH, tfrecord:GLOB or "
                 "fashion_mnist)")
    else:
        try:
            DataSource.parse(source)
        except (TypeError, ValueError) as err:
            p.append(f"{p.name('data.source')}: {err} (set --{p.name('data.source')})")
    p.require("data.sharding", _one_of(SHARDING), f"one of {list(SHARDING)}")


def _check_mimic_layers(p, c):
    """Block m of the generator has resolution 2^(m+2); the relation loss reads blocks ``kd.mimic_layers``."""
    if not (c.teacher and _is_number(c.kd.weight_relation) and c.kd.weight_relation > 0):
        return  # the layers are not used
    size = c.generator.size
    if not (is_int(size) and size >= 8 and size & (size - 1) == 0):
        return  # reported with generator.size
    blocks = int(math.log2(c.generator.size)) - 2
    p.require("kd.mimic_layers", lambda v: len(v) > 0 and all(is_int(m) and 1 <= m <= blocks for m in v),
              f"a non-empty list of blocks in [1, {blocks}] for a {c.generator.size} px generator "
              "(block m has resolution 2^(m+2))",
              f"set --{p.name('kd.mimic_layers')}, or --{p.name('kd.weight_relation')}=0 to turn the relation loss off")


CONTENT_MASK_MODES = ("on", "off", "auto")


def uses_content_mask(config):
    """Whether a distillation masks the KD images: ``kd.content_mask`` "on", or "auto" with weights given (FFHQ)."""
    kd = config.kd
    return kd.content_mask == "on" or (kd.content_mask == "auto" and bool(kd.face_parsing_weights))


def _check_content_mask(p, c):
    """The mask needs the face-parsing weights, which cannot be downloaded here: users must point at their copy."""
    weights = c.kd.face_parsing_weights
    if not p.require("kd.face_parsing_weights", lambda v: isinstance(v, str), 'a path or ""'):
        return
    if c.kd.content_mask != "on" and not (c.kd.content_mask == "auto" and weights):
        return
    if not weights:
        p.append(f"{p.name('kd.content_mask')} is on but {p.name('kd.face_parsing_weights')} is empty (give "
                 f"--{p.name('kd.face_parsing_weights')}=79999_iter.pth, the face-parsing.PyTorch BiSeNet weights, "
                 f"or set --{p.name('kd.content_mask')}=off)")
    elif not Path(weights).is_file():
        p.append(f"{p.name('kd.face_parsing_weights')} {weights!r} is not a file (give the path of 79999_iter.pth, "
                 f"or set --{p.name('kd.content_mask')}=off)")


def _check_batch(p, c, num_replicas):
    batch, group = c.train.batch_size, c.kd.group_size
    if c.teacher and c.stage1.steps and c.stage1.batch_size % num_replicas:
        p.add("stage1.batch_size", f"divisible by the {num_replicas} replicas",
              f"set --{p.name('stage1.batch_size')} to a multiple of {num_replicas}")
    if batch % num_replicas:
        p.add("train.batch_size", f"divisible by the {num_replicas} replicas",
              f"set --{p.name('train.batch_size')} to a multiple of {num_replicas}")
        return
    per_replica = batch // num_replicas
    if group < per_replica and per_replica % group:
        p.add("kd.group_size", f"a divisor of the per-replica batch {per_replica} (or >= it)",
              f"set --{p.name('kd.group_size')}, e.g. 4")
