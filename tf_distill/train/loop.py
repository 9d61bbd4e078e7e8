"""The training run: models, stage 1, stage 2, data, checkpoints, logs, samples; resumable from ``workdir``.

``workdir`` layout: ``checkpoints/`` (tf.train.CheckpointManager: G, G_ema, D, optimizers, step,
pl_mean, RNG state; the data stream is deterministic and is resumed by skipping), ``tb/`` (TensorBoard), ``samples/`` (PNG grids, teacher vs
student on fixed z), ``final/`` (our checkpoint directory of the last step: g_ema/g/d .keras).

Resuming skips a checkpoint that cannot be read (kept on disk) for the one before it; a save that
fails leaves nothing of itself, so the previous checkpoint stays the latest.
"""

import errno
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging

from tf_distill.io import checkpoints
from tf_distill.data import DataSource, DecodeStats, make_dataset, naming_damaged_files
from tf_distill.errors import UserError, reason
from tf_distill.images import save_grid
from tf_distill.models import Discriminator, Generator
from tf_distill.outputs import RUN_FOLDERS, WorkdirLock, lies_in
from tf_distill.progress import format_duration
from tf_distill.train.config_check import check_batch, check_config, check_max_steps, uses_content_mask
from tf_distill.train.mimic import MappingMimic
from tf_distill.train.strategy import is_chief, make_strategy
from tf_distill.train.student import resolve_student
from tf_distill.train.step import TrainStep

# What a checkpoint that cannot be restored raises: a truncated or overwritten data file (IndexError
# "Read less bytes than requested", DataLossError), a bad index, a missing file (OpError/OSError),
# or one of another config (ValueError on shapes, AssertionError on unmatched variables).
_RESTORE_ERRORS = (tf.errors.OpError, OSError, IndexError, ValueError, AssertionError)


class NonFiniteLossError(UserError):
    """A loss became NaN or inf; the run stops without writing a checkpoint."""


class CheckpointError(UserError):
    """No checkpoint of the workdir can be restored, or one could not be written."""


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (then it checkpoints and exits)."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):  # pylint: disable=unused-argument
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def build_models(config, strategy):
    """(g, g_ema, d, teacher) under the strategy.

    The student is random (with the teacher's mapping if ``kd.load_style``), or, with ``init_from``,
    g, g_ema and d start from a CAGAN-pruned checkpoint (the reference's ``--load 1``).
    """
    gen_config = {k: v for k, v in config.generator.to_dict().items() if v is not None}
    d_config = {k: v for k, v in config.discriminator.to_dict().items() if v is not None}
    init_from = config.init_from
    init = _read_init(init_from, gen_config["lr_mlp"]) if init_from else None
    with strategy.scope():
        teacher = None
        if config.teacher:
            teacher = checkpoints.load_generator(config.teacher)
            teacher.trainable = False
            _check_teacher(teacher, gen_config)
        try:  # the constructors check the architecture (channel counts, mapping widths) before any weight exists
            g = Generator(**gen_config, name="g")
            g_ema = Generator(**gen_config, name="g_ema")
        except ValueError as err:
            raise UserError(f"config.generator: {err} (fix the generator settings)") from err
        try:
            # the minibatch stddev per group of kd.group_size samples, or of the whole per-replica batch
            # when it is smaller (as the training step's relation groups)
            per_replica = int(config.train.batch_size) // strategy.num_replicas_in_sync
            d = Discriminator(gen_config["size"], stddev_chunk=min(int(config.kd.group_size), per_replica),
                              name="d", **d_config)
        except ValueError as err:
            raise UserError(f"config.discriminator: {err} (fix the discriminator settings)") from err
        for model in (g, g_ema, d):
            model.build()
        if init is not None:  # the loaded mapping is the student's own: load_style does not replace it
            for key, model in (("g", g), ("g_ema", g_ema), ("d", d)):
                _assign_init(model, init[key], init_from)
        else:
            if teacher is not None and config.kd.load_style and config.stage1.steps == 0:
                copy_mapping(teacher, g)
            for dst, src in zip(g_ema.trainable_weights, g.trainable_weights):
                dst.assign(src)
    return g, g_ema, d, teacher


def _read_init(path, lr_mlp):
    """g, g_ema and d of the checkpoint ``config.init_from`` (a rosinality .pt or our checkpoint directory),
    read before the run's models are built so that a bad file fails first."""
    models = checkpoints.load_any(path, lr_mlp=lr_mlp)
    missing = [key for key in ("g", "g_ema", "d") if key not in models]
    if missing:
        raise UserError(f"config.init_from {path} holds no {' and no '.join(missing)} (initializing from a "
                        "checkpoint loads g, g_ema and d: give a CAGAN-pruned .pt that has all three, or set "
                        '--config.init_from="" for a random student)')
    return models


# The architecture a checkpoint fixes, per network: (attribute, config key).
_INIT_KEYS = {Generator: [("size", "generator.size"), ("style_dim", "generator.style_dim"),
                          ("mapping_widths", "generator.mapping_widths"), ("n_mlp", "generator.n_mlp"),
                          ("kernel_size", "generator.kernel_size"), ("channels", "generator.channels")],
              Discriminator: [("size", "generator.size"), ("channels", "discriminator.channels")]}


def _assign_init(model, loaded, path):
    """Copies ``loaded``'s weights into ``model`` after checking that the config builds its architecture."""
    for attr, key in _INIT_KEYS[type(model)]:
        if attr == "n_mlp" and model.mapping_widths is not None:
            continue  # n_mlp is unused with explicit mapping widths
        want, have = getattr(loaded, attr), getattr(model, attr)
        if want != have:
            raise UserError(f"config.init_from {path}: its {model.name} has {attr} {want} but config.{key} gives "
                            f"{have} (set --config.{key}={_flag_value(want)}, or give a checkpoint of the "
                            "configured architecture)")
    for dst, src in zip(model.weights, loaded.weights, strict=True):
        dst.assign(src)


def _flag_value(value):
    """A config value as a command-line flag writes it (lists without spaces)."""
    return str(value).replace(" ", "")


def _check_teacher(teacher, gen_config):
    """The student draws the teacher's z and is compared pixel to pixel: same resolution and style_dim."""
    for key in ("size", "style_dim"):
        if getattr(teacher, key) != gen_config[key]:
            raise UserError(f"the teacher's {key} is {getattr(teacher, key)} but config.generator.{key} is "
                            f"{gen_config[key]} (set --config.generator.{key}={getattr(teacher, key)}, or use a "
                            "teacher that matches)")


def copy_mapping(teacher, student):
    """The paper's ``load_style``: the student starts with the teacher's mapping network."""
    src, dst = teacher.mapping.weights, student.mapping.weights  # the frozen teacher has no trainable_weights
    if [tuple(v.shape) for v in src] != [tuple(v.shape) for v in dst] or \
            teacher.mapping.lr_mul != student.mapping.lr_mul or teacher.mapping.pixel_norm != student.mapping.pixel_norm:
        raise UserError("config.kd.load_style copies the teacher's mapping, but the student's mapping differs "
                        "(train it with stage 1, --config.stage1.steps > 0, or set --config.kd.load_style=False)")
    for d, s in zip(dst, src):
        d.assign(s)


def variables_by_path(prefix, obj):
    """``{"<prefix>.<variable path>": variable}`` for a Keras model or optimizer.

    tf.train.Checkpoint does not follow Keras 3's tracked lists (a model's blocks, noise maps,
    mapping layers), so every variable is named explicitly by its unique Keras path.
    """
    variables = obj.variables
    names = {f"{prefix}.{v.path.replace('/', '.')}": v for v in variables}
    if len(names) != len(variables):
        raise ValueError(f"{prefix}: variable paths are not unique; cannot checkpoint by name.")
    return names


def check_inputs_outside_outputs(config, workdir):
    """Refuses a run whose input files lie where it writes (a teacher trained in the same workdir: its final/ would
    be resumed from and then replaced), or whose image folder holds the workdir (the sample PNGs written there would
    be read as training images when the run resumes)."""
    workdir = Path(workdir).resolve()
    inputs = (("config.teacher", config.teacher), ("config.init_from", config.init_from),
              ("config.kd.face_parsing_weights", config.kd.face_parsing_weights))
    for key, value in inputs:
        for folder in (workdir / name for name in RUN_FOLDERS):
            if value and lies_in(value, folder):
                raise UserError(f"{key}={value} lies in {folder}, which this run writes (copy it elsewhere, or "
                                "choose another --workdir)")
    try:
        source = DataSource.parse(config.data.source)
    except ValueError:  # check_config names a bad source; a run without data (mimicking) has none
        return
    if source.kind == "folder" and lies_in(workdir, source.path):
        raise UserError(f"--workdir={workdir} lies in the image folder of config.data.source={config.data.source}: "
                        "the run's sample PNGs would be read as training images when it resumes (choose a --workdir "
                        "outside it)")


class Run:
    """A training run bound to ``workdir``."""

    def __init__(self, config, workdir, lpips=None):
        resolve_student(config)  # a config with a ``student`` section takes its architecture from the teacher
        check_config(config)  # every bad value fails here, before anything is built or written
        check_inputs_outside_outputs(config, workdir)
        self.config, self.workdir = config, Path(workdir)
        self.strategy = make_strategy(config.strategy)
        check_batch(config, self.strategy.num_replicas_in_sync)
        self.chief = is_chief(self.strategy)
        # The chief's lock on the workdir, from here (nothing is written before) to the end of run(); the
        # other workers write only scratch folders of their own.
        self._lock = WorkdirLock(self.workdir).acquire() if self.chief else None
        try:
            self._build(config, lpips)
        except BaseException:
            self.release()
            raise

    def release(self):
        """Lets another run use the workdir (run() does this when it ends)."""
        if self._lock is not None:
            self._lock.release()

    def _build(self, config, lpips):
        tf.keras.utils.set_random_seed(config.seed)
        self.g, self.g_ema, self.d, self.teacher = build_models(config, self.strategy)
        if self.teacher is not None and config.kd.weight_lpips > 0 and lpips is None:
            from tf_distill.metrics.lpips import LPIPS  # pylint: disable=import-outside-toplevel

            with self.strategy.scope():
                lpips = LPIPS()
        self.face_parser = None
        if self.teacher is not None and uses_content_mask(config):
            from tf_distill.models.face_parsing import load_face_parsing  # pylint: disable=import-outside-toplevel

            with self.strategy.scope():
                self.face_parser = load_face_parsing(config.kd.face_parsing_weights)
        self.step = TrainStep(self.strategy, self.g, self.g_ema, self.d, config, self.teacher, lpips,
                              seed=config.seed, content_mask_fn=self._content_mask if self.face_parser else None)
        self.mimic = None
        if self.teacher is not None and config.stage1.steps > 0:
            self.mimic = MappingMimic(self.g, self.teacher, config.stage1.batch_size, config.stage1.lr,
                                      config.stage1.loss, seed=config.seed + 1, strategy=self.strategy)
        self.stats = DecodeStats()
        self.iterator = None  # made after restore(), continuing the data stream where the run stopped
        self.mimic_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="mimic_step")
        keras_objects = dict(g=self.g, g_ema=self.g_ema, d=self.d, g_optim=self.step.g_opt, d_optim=self.step.d_opt)
        items = dict(step=self.step.step, pl_mean=self.step.pl_mean, rng=self.step.rng, mimic_step=self.mimic_step)
        if self.mimic is not None:
            keras_objects["mimic_optim"] = self.mimic.optimizer
            items["mimic_rng"] = self.mimic.rng
        for prefix, obj in keras_objects.items():
            items.update(variables_by_path(prefix, obj))
        self.checkpoint = tf.train.Checkpoint(**items)
        self.manager = self._make_manager()
        self.writer = tf.summary.create_file_writer(str(self.workdir / "tb")) if self.chief else None
        rng = np.random.default_rng(config.seed + 12345)
        self._fid_stats = None
        self._resume_point = "the start"  # what a rerun resumes from: the last checkpoint restored or written
        self.sample_z = rng.standard_normal((config.log.n_samples, self.g.style_dim)).astype(np.float32)

    def _dataset(self, step):
        """The distributed data stream from iteration ``step`` on (the same images an uninterrupted run sees).

        The stream is deterministic given the seed, so resuming skips what was consumed instead of
        checkpointing the iterator (which tf.data cannot do for pipelines with Python decoding).
        """
        source = DataSource.parse(self.config.data.source)
        size, batch, seed = self.config.generator.size, self.config.train.batch_size, self.config.seed

        def dataset_fn(input_context):
            per_pipeline = self.strategy.num_replicas_in_sync // input_context.num_input_pipelines
            return make_dataset(source, size, batch, shuffle=True, flip=self.config.data.flip, repeat=True,
                                seed=seed, input_context=input_context, stats=self.stats,
                                skip_batches=step * per_pipeline, sharding=self.config.data.sharding)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    # ---- checkpoints -------------------------------------------------------------------------------
    def _make_manager(self):
        """The checkpoint manager, which reads the ``checkpoint`` list now.

        A list that cannot be read is moved aside (kept) with a warning, so that restore() looks for
        the ``ckpt-N`` on disk instead of the run starting over on top of them.
        """
        directory = self.workdir / "checkpoints"
        state = directory / "checkpoint"
        try:
            manager = tf.train.CheckpointManager(self.checkpoint, directory,
                                                 max_to_keep=self.config.log.keep_checkpoints)
            if manager.latest_checkpoint or not state.exists():
                return manager
            reason = "not a checkpoint list"  # TensorFlow ignores a list it cannot parse
        except ValueError as err:  # one that names no checkpoint, or is not text
            reason = _short(err)
        aside = state.with_name(f"checkpoint.unreadable-{uuid.uuid4().hex[:8]}")
        os.replace(state, aside)
        print(f"warning: the checkpoint list {state} cannot be read ({reason}); kept as {aside.name}; "
              "looking for the checkpoints beside it", file=sys.stderr, flush=True)
        return tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=self.config.log.keep_checkpoints)

    def restore(self):
        """Restores the newest checkpoint that can be read; returns its path (None: a fresh run).

        One that cannot be read (truncated, overwritten, bad index, ...) is reported, left on disk
        and skipped for the one before it, which then restores every variable, so nothing of a
        failed partial restore remains. Fails only if there are checkpoints and none can be read.
        """
        tried, candidates = [], self._checkpoint_candidates()
        for i, path in enumerate(candidates):
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except _RESTORE_ERRORS as err:
                reason = _short(err)
                tried.append(f"{Path(path).name} ({reason})")
                print(f"warning: cannot restore checkpoint {path}: {reason}; it stays on disk (a later save of "
                      "the same step replaces it: copy it elsewhere to keep it)"
                      + ("; trying the one before it" if i + 1 < len(candidates) else ""), file=sys.stderr, flush=True)
                continue
            self._resume_point = self._position()
            logging.info("Resumed from %s at %s.", path, self._resume_point)
            print(f"resumed from {path} ({self._resume_point})", flush=True)
            return path
        if tried:
            raise CheckpointError(
                f"no checkpoint in {self.manager.directory} can be restored: {'; '.join(tried)} (if the config "
                f"changed, rerun with the one the run started with; to start fresh, move {self.workdir} aside or "
                "choose another --workdir)")
        return None

    def _checkpoint_candidates(self):
        """The manager's checkpoints, newest first; without its state file, the ``ckpt-N`` found on disk."""
        paths = list(reversed(self.manager.checkpoints))
        latest = self.manager.latest_checkpoint
        if latest and latest not in paths:
            paths.insert(0, latest)
        if not paths:  # a lost or garbled ``checkpoint`` file: do not start over on top of the old checkpoints
            found = {}
            for index in Path(self.manager.directory).glob("ckpt-*.index"):
                number = index.stem[len("ckpt-"):]
                if number.isdigit():
                    found[int(number)] = str(index.with_suffix(""))
            paths = [found[n] for n in sorted(found, reverse=True)]
        return paths

    def _position(self):
        """Where a resume would start now, in the user's terms."""
        if self.mimic is not None and int(self.mimic_step.numpy()) < self.config.stage1.steps:
            return f"stage 1 step {int(self.mimic_step.numpy())}"
        return f"step {int(self.step.step.numpy())}"

    def save(self):
        """Writes a checkpoint; a failed write leaves nothing of itself and stops with a CheckpointError."""
        if not self.chief:
            # Under MultiWorkerMirroredStrategy every worker takes part in saving (it may run
            # collectives), but only the chief's checkpoint is kept: the others write to a
            # directory of their own and delete it (the pattern of Keras' ModelCheckpoint).
            scratch = self.workdir / f".worker_{self.strategy.cluster_resolver.task_id}_checkpoint"
            try:
                self.checkpoint.write(str(scratch / "ckpt"))
            except (OSError, tf.errors.OpError) as err:
                raise self._save_error(scratch / "ckpt", err) from err
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return None
        # CheckpointManager writes the shards first and the index last, so a kill mid-write keeps the last one.
        number = int(self.step.step.numpy()) + int(self.mimic_step.numpy())
        directory = Path(self.manager.directory)
        before = set(directory.iterdir()) if directory.is_dir() else set()
        try:
            path = self.manager.save(checkpoint_number=number)
        except (OSError, tf.errors.OpError) as err:
            self._discard_failed_save(directory, before, number)
            raise self._save_error(directory / f"ckpt-{number}", err) from err
        self._resume_point = self._position()
        return path

    def _discard_failed_save(self, directory, before, number):
        """Removes what the failed save created (``ckpt-N_temp/``, partial ``ckpt-N.*``, the state's temp file).

        The ``checkpoint`` state file is written atomically, so on disk the previous checkpoint is
        still the latest; a fresh manager reads that state back in place of the failed save's.
        """
        created = set(directory.iterdir()) - before if directory.is_dir() else set()
        for entry in created:
            if not entry.name.startswith((f"ckpt-{number}.", f"ckpt-{number}_temp", "checkpoint.tmp")):
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        try:
            self.manager = self._make_manager()
        except (OSError, tf.errors.OpError):
            pass  # the save's own error is the one to report

    def _save_error(self, prefix, err):
        code = getattr(err, "errno", None)
        if code in (errno.EROFS, errno.EACCES, errno.EPERM) or isinstance(err, tf.errors.PermissionDeniedError):
            fix = f"make {prefix.parent} writable"
        elif code in (errno.ENOSPC, errno.EDQUOT) or isinstance(err, tf.errors.ResourceExhaustedError):
            fix = "free disk space"
        else:
            fix = "fix the cause"
        return CheckpointError(f"cannot write checkpoint {prefix}: {_short(err)}; nothing of it was kept ({fix} "
                               f"and rerun the same command: it resumes from {self._resume_point})")

    # ---- logs and samples --------------------------------------------------------------------------
    def _log(self, name, step, logs, start_step, start_time, total):
        done = step - start_step
        rate = done / max(time.time() - start_time, 1e-9)
        eta = (total - step) / rate if rate > 0 else float("inf")
        text = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()))
        print(f"[{name}] step {step}/{total} {rate:.2f} it/s ETA {format_duration(eta)} {text}", flush=True)
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for k, v in logs.items():
                    tf.summary.scalar(f"{name}/{k}", v)

    def _content_mask(self, teacher_images):
        from tf_distill.losses.content_mask import content_mask  # pylint: disable=import-outside-toplevel

        return content_mask(self.face_parser, teacher_images)

    def write_mask_samples(self):
        """``samples/content_mask.png`` at the start: teacher images, their face parsing, and what the KD losses see.

        Rows: teacher images (the sample z), the parsing in class colours, the teacher times the mask
        (background and cloth zeroed), so users can check what the distillation ignores.
        """
        from tf_distill.losses.content_mask import parse_faces  # pylint: disable=import-outside-toplevel

        path = self.workdir / "samples" / "content_mask.png"
        if not self.chief or self.face_parser is None or path.exists():
            return None
        images = self.teacher(self.sample_z, randomize_noise=False)
        classes = tf.image.resize(parse_faces(self.face_parser, images)[..., None], images.shape[1:3],
                                  method="nearest")[..., 0].numpy()
        palette = np.random.default_rng(19).uniform(-1, 1, (19, 3)).astype(np.float32)
        palette[0] = -1  # background black
        rows = np.concatenate([images.numpy(), palette[classes], (images * self._content_mask(images)).numpy()])
        path = save_grid(rows, path, ncol=len(self.sample_z))
        print(f"content-aware mask: {path} (teacher | face parsing | masked teacher, as the KD losses see it)",
              flush=True)
        with self.writer.as_default(step=0):
            tf.summary.image("content mask (teacher | parsing | masked)", np.clip((rows + 1) / 2, 0, 1),
                             max_outputs=len(rows))
        return path

    def write_samples(self, step):
        if not self.chief:
            return None
        rows = [self.g_ema(self.sample_z, randomize_noise=False).numpy()]
        if self.teacher is not None:
            rows.insert(0, self.teacher(self.sample_z, randomize_noise=False).numpy())
        images = np.concatenate(rows)
        path = save_grid(images, self.workdir / "samples" / f"step_{step:07d}.png", ncol=len(self.sample_z))
        with self.writer.as_default(step=step):
            tf.summary.image("samples (teacher row above student)" if self.teacher is not None else "samples",
                             np.clip((images + 1) / 2, 0, 1), max_outputs=len(images))
        return path

    def fid_cache_path(self):
        """Where the training data's FID statistics are cached: named by what they depend on (source, size, count),
        so a run resumed with another data source does not reuse the old source's."""
        key = json.dumps([str(self.config.data.source), int(self.g.size), int(self.config.eval.fid_samples)])
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self.workdir / f"real_stats_{self.config.eval.fid_samples}_{digest}.npz"

    def evaluate_fid(self, step):
        """FID of g_ema against the training data (its statistics cached in the workdir), to TensorBoard."""
        from tf_distill.metrics import generator_eval  # pylint: disable=import-outside-toplevel

        cfg = self.config.eval
        if self._fid_stats is None:
            self._fid_stats = generator_eval.dataset_statistics(
                self.config.data.source, self.g.size, cfg.fid_samples, cfg.fid_batch, cache_path=self.fid_cache_path())
        fid, count = generator_eval.generator_fid(self.g_ema, self._fid_stats, cfg.fid_samples, cfg.fid_batch,
                                                  strategy=self.strategy, seed=step)
        print(f"[eval] step {step} FID({count}) = {fid:.3f}", flush=True)
        if self.writer is not None:
            with self.writer.as_default(step=step):
                tf.summary.scalar(f"eval/fid_{count}", fid)
        return fid

    # ---- the loops ---------------------------------------------------------------------------------
    def run_stage1(self, stop):
        """Stage 1 up to ``config.stage1.steps``, under the run's strategy; its last step ends with g_ema <- g."""
        total = self.config.stage1.steps
        start, start_time = int(self.mimic_step.numpy()), time.time()
        while int(self.mimic_step.numpy()) < total and stop.signal is None:
            loss = float(self.mimic.step())
            self.mimic_step.assign_add(1)
            step = int(self.mimic_step.numpy())
            _check_finite({"mimic_loss": loss}, step)
            if step == total:  # part of the last step, so a checkpoint after it (or a resume) has it done
                for dst, src in zip(self.g_ema.mapping.trainable_weights, self.g.mapping.trainable_weights):
                    dst.assign(src)
            if step % self.config.log.every == 0 or step == total:
                self._log("stage1", step, {"mimic_loss": loss}, start, start_time, total)
            if step % self.config.log.checkpoint_every == 0:
                self.save()

    def run(self, max_steps=None):
        """Trains until ``config.train.steps`` (or ``max_steps`` more iterations, or a signal); returns the step."""
        check_max_steps(max_steps)
        if self._lock is not None:
            self._lock.acquire()  # again, when run() is called a second time
        try:
            self.restore()
            self.write_mask_samples()
            total = self.config.train.steps
            with _StopRequest() as stop:
                if self.mimic is not None:
                    self.run_stage1(stop)
                start, start_time = int(self.step.step.numpy()), time.time()
                self.iterator = iter(self._dataset(start))
                end = total if max_steps is None else min(total, start + max_steps)
                while int(self.step.step.numpy()) < end and stop.signal is None:
                    with naming_damaged_files(self.config.data.source):
                        batch = next(self.iterator)
                    logs = {k: float(v) for k, v in self.step.train_step(batch).items()}
                    step = int(self.step.step.numpy())
                    _check_finite(logs, step)
                    if step % self.config.log.every == 0 or step == end:
                        self._log("train", step, logs, start, start_time, total)
                    if step % self.config.log.sample_every == 0:
                        self.write_samples(step)
                    if self.config.eval.fid_every and step % self.config.eval.fid_every == 0:
                        self.evaluate_fid(step)
                    if step % self.config.log.checkpoint_every == 0:
                        self.save()
                step = int(self.step.step.numpy())
                self.save()
                if stop.signal is not None:
                    print(f"stopped by signal {stop.signal} at {self._position()}; checkpoint written", flush=True)
            if self.stats.num_skipped:
                self.stats.log_summary()
            if step >= total and self.chief:
                self.write_samples(step)
                checkpoints.save_models(self.workdir / "final", g_ema=self.g_ema, g=self.g, d=self.d)
                (self.workdir / "final" / "config.json").write_text(self.config.to_json_best_effort(indent=2))
            return step
        finally:
            self.release()


def _short(err):
    """The first line of an error, for one-line messages (TensorFlow's run to pages)."""
    return f"{type(err).__name__}: {reason(err)}"


def _check_finite(logs, step):
    bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(f"non-finite loss at step {step}: {bad}; stopping without a checkpoint so the "
                                 "last good one stays the latest (lower the learning rate or check the data).")

