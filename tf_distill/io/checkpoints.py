"""Our generator/discriminator checkpoints: reading and writing them in the formats users hold.

- rosinality/CAGAN/StyleKD ``.pt`` checkpoints ({'g', 'g_ema', 'd'[, 'latent_avg']}, or a bare
  state_dict): read without torch by a restricted unpickler, mapped by name (``convert.rosinality``).
- Our converted checkpoint: a directory with one Keras 3 ``.keras`` archive per network
  (``g_ema.keras``, ``g.keras``, ``d.keras``) and ``latent_avg.npy`` when the source had one.
  ``.keras`` stores the architecture config next to the weights, loads with
  ``keras.models.load_model`` in safe mode (no pickle, no code), and is what Keras users expect;
  training state (optimizers, step) lives in the trainer's ``tf.train.Checkpoint`` instead.

Both readers check the architecture a file declares (``convert.architecture``: bounds, every
tensor's shape, the memory limit ``TF_DISTILL_MAX_MODEL_GB``) before building a model, so a
crafted file is refused in one line instead of allocating what it asks for.
"""

import json
import os
import zipfile
from pathlib import Path

import keras
import numpy as np

from tf_distill import outputs
from tf_distill.convert import architecture, rosinality
from tf_distill.io.torch_reader import CheckpointError, load_torch_checkpoint
from tf_distill.io.torch_writer import save_torch_checkpoint
from tf_distill.errors import UserError, reason
from tf_distill.layers.equalized import PACKAGE
from tf_distill.models import Discriminator, Generator

NETWORKS = ("g_ema", "g", "d")
# What our checkpoint directory may hold (save_models, and a training run's final/ adds its config.json).
CHECKPOINT_ENTRIES = (*(f"{k}.keras" for k in NETWORKS), "latent_avg.npy", "config.json")

_KERAS_FIX = "re-save it with tf-distill, or convert the original .pt again with tf-distill-convert"
# The Keras classes a .keras archive may hold: (class, config check, parameter shapes).
_KERAS_CLASSES = {"Generator": (Generator, architecture.generator_config, architecture.generator_shapes),
                  "Discriminator": (Discriminator, architecture.discriminator_config,
                                    architecture.discriminator_shapes)}
_MAX_CONFIG_BYTES = 1 << 20  # a Generator's config.json is under 1 KB
_MAX_DEFLATE_RATIO = 1032  # the most one compressed byte of a zip record can expand to


class ModelFileError(UserError, ValueError):
    """A ``.keras`` archive or converted checkpoint that cannot be read (one line: the file and the problem)."""


def read_rosinality(path, lr_mlp=0.01):
    """{'g_ema'|'g'|'d': Keras model, 'latent_avg': array} from a rosinality ``.pt`` (or bare state_dict).

    Every network's architecture is derived and checked against all its tensors, the bounds and
    the memory limit before the first model is built.
    """
    ckpt, plans, latent_avg = _rosinality_plans(path, lr_mlp)
    models = {key: _with_context(f"{path} [{key}]", rosinality.build_from_state_dict, cls, config, ckpt[key])
              for key, (cls, config) in plans.items()}
    if latent_avg is not None:
        models["latent_avg"] = latent_avg
    return models


def _rosinality_plans(path, lr_mlp):
    """(checkpoint dict, {network key: (class, checked constructor config)}, checked latent_avg or None)
    of a rosinality ``.pt``."""
    try:
        ckpt = load_torch_checkpoint(path)
    except CheckpointError as err:
        raise CheckpointError(f"{err} ({rosinality.FIX})") from None
    if not isinstance(ckpt, dict):
        raise rosinality.StateDictError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__} "
                                        f"({rosinality.FIX}).")
    if "conv1.conv.weight" in ckpt:  # a bare generator state_dict
        ckpt = {"g_ema": ckpt}
    if not any(k in ckpt for k in NETWORKS):
        raise rosinality.StateDictError(f"{path}: no 'g_ema', 'g' or 'd' state_dict and no generator parameters; "
                                        f"found keys {sorted(map(str, ckpt))[:8]} ({rosinality.FIX}).")
    plans = {}
    for key in (k for k in NETWORKS if k in ckpt):
        if not isinstance(ckpt[key], dict):
            raise rosinality.StateDictError(f"{path} [{key}]: is a {type(ckpt[key]).__name__}, not a state_dict "
                                            f"({rosinality.FIX}).")
        cls, check = ((Discriminator, rosinality.checked_discriminator_config) if key == "d" else
                      (Generator, lambda sd: rosinality.checked_generator_config(sd, lr_mlp=lr_mlp)))
        plans[key] = (cls, _with_context(f"{path} [{key}]", check, ckpt[key]))
    latent_avg = (_checked_latent_avg(ckpt["latent_avg"], _style_dims(plans), path) if "latent_avg" in ckpt
                  else None)
    return ckpt, plans, latent_avg


def _style_dims(plans):
    """The style_dims of the generators among ``plans`` ({key: (class, config)})."""
    return {config["style_dim"] for cls, config in plans.values() if cls is Generator}


def _checked_latent_avg(value, style_dims, where):
    """``value`` as a [1, style_dim] float32 array, if it is a floating array of one generator's style_dim."""
    sizes = style_dims or range(1, architecture.MAX_WIDTH + 1)
    if not (isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating) and value.size in sizes):
        what = f"shape {value.shape}" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
        raise rosinality.StateDictError(f"{where}: latent_avg is {what}, not a float vector of the generator's "
                                        f"style_dim {sorted(style_dims) or ''} ({rosinality.FIX}).")
    return np.asarray(value, np.float32).reshape(1, -1)


def _with_context(where, fn, *args):
    try:
        return fn(*args)
    except architecture.ArchitectureError as err:
        raise type(err)(f"{where}: {err}") from None


def write_rosinality(path, **models):
    """Writes Keras models (g_ema=, g=, d=, latent_avg=) as a rosinality ``.pt`` that torch.load(weights_only) reads."""
    ckpt = {}
    for key, model in models.items():
        if model is None:
            continue
        ckpt[key] = np.asarray(model, np.float32) if key == "latent_avg" else rosinality.state_dict(model)
    save_torch_checkpoint(ckpt, path)


def save_models(directory, **models):
    """Writes our checkpoint directory atomically, with the umask's permissions: filled in a hidden sibling,
    then renamed into place (``outputs.staged_directory``)."""
    with outputs.staged_directory(directory) as stage:
        for key, model in models.items():
            if model is None:
                continue
            if key == "latent_avg":
                np.save(stage / "latent_avg.npy", np.asarray(model, np.float32))
            else:
                model.save(stage / f"{key}.keras")


def load_models(directory):
    """Reads every network of our checkpoint directory."""
    files = _checkpoint_files(directory)
    models = {k: load_keras(f) for k, f in files.items() if k != "latent_avg"}
    if "latent_avg" in files:
        style_dims = {m.style_dim for m in models.values() if isinstance(m, Generator)}
        models["latent_avg"] = _load_latent_avg(files["latent_avg"], style_dims)
    return models


def _checkpoint_files(directory):
    """{network key or "latent_avg": path} of the files our checkpoint directory holds (FileNotFoundError if none)."""
    directory = Path(directory)
    files = {**{k: directory / f"{k}.keras" for k in NETWORKS}, "latent_avg": directory / "latent_avg.npy"}
    found = {k: f for k, f in files.items() if f.exists()}
    if not found:
        raise FileNotFoundError(f"{directory} holds no g_ema.keras, g.keras or d.keras; convert a checkpoint with "
                                "tf-distill-convert first.")
    return found


def _load_latent_avg(path, style_dims):
    try:
        value = np.load(path, mmap_mode="r", allow_pickle=False)  # maps, so a crafted header allocates nothing
    except (ValueError, EOFError) as err:
        raise ModelFileError(f"{path}: not a readable .npy array ({reason(err)}) ({_KERAS_FIX}).") from None
    return _checked_latent_avg(value, style_dims, path)


def load_keras(path):
    """The Generator or Discriminator of a ``.keras`` archive.

    Its ``config.json`` is read and checked first (``_checked_keras_config``), so a crafted archive
    is refused before Keras builds anything; every failure is a one-line ModelFileError or
    ArchitectureError.
    """
    path = Path(path)
    cls, _ = _checked_keras_config(path)
    try:
        model = keras.models.load_model(path)
    except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ModelFileError(f"{path}: cannot load the .keras archive ({type(err).__name__}: {reason(err)}) "
                             f"({_KERAS_FIX}).") from err
    if not isinstance(model, cls):
        raise ModelFileError(f"{path}: loaded a {type(model).__name__}, not a {cls.__name__} ({_KERAS_FIX}).")
    return model


def _checked_keras_config(path):
    """(class, checked constructor config) of a ``.keras`` archive, from its ``config.json`` alone: the class,
    the bounds, the memory limit, and a weights record large enough for the parameters it declares."""
    with open(path, "rb") as fh:  # a missing or unreadable file stays an OSError
        try:
            with zipfile.ZipFile(fh) as zf:
                info = zf.getinfo("config.json")
                if info.file_size > _MAX_CONFIG_BYTES:
                    raise ModelFileError(f"{path}: its config.json has {info.file_size} bytes, more than a model's "
                                         f"config ({_KERAS_FIX}).")
                config = json.loads(zf.read(info))
                weights = zf.getinfo("model.weights.h5")
        except ModelFileError:
            raise
        except Exception as err:  # pylint: disable=broad-except  # zipfile, zlib, json: all mean a bad archive
            raise ModelFileError(f"{path}: not a readable .keras archive ({type(err).__name__}: {err}) "
                                 f"({_KERAS_FIX}).") from None
        archive_size = os.fstat(fh.fileno()).st_size
    name = config.get("class_name") if isinstance(config, dict) else None
    if name not in _KERAS_CLASSES or config.get("registered_name") != f"{PACKAGE}>{name}" \
            or not isinstance(config.get("config"), dict):
        raise ModelFileError(f"{path}: holds a {str(name)[:60]!r} model, not a tf-distill Generator or "
                             f"Discriminator ({_KERAS_FIX}).")
    cls, check_config, shapes_of = _KERAS_CLASSES[name]
    checked = _with_context(path, check_config, config["config"])
    params, _ = shapes_of(checked)
    _with_context(path, architecture.check_memory, params, f"its {name}")
    need = 2 * architecture.parameter_count(params)  # at least 16 bits per parameter
    most = weights.compress_size * (1 if weights.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO)
    if weights.compress_size > archive_size or most < need:
        raise ModelFileError(f"{path}: its weights record cannot hold the {architecture.parameter_count(params):,} "
                             f"parameters its config declares; the archive is truncated or crafted ({_KERAS_FIX}).")
    return cls, checked


def load_any(path, lr_mlp=0.01):
    """Networks from a ``.pt``, a ``.keras`` generator/discriminator, or our checkpoint directory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint {path} does not exist (check the path).")
    if path.is_dir():
        return load_models(path)
    if path.suffix == ".keras":
        model = load_keras(path)
        return {"g_ema" if isinstance(model, Generator) else "d": model}
    return read_rosinality(path, lr_mlp=lr_mlp)


def load_generator(path, which="g_ema", lr_mlp=0.01):
    """The generator ``which`` (default the EMA generator, falling back to ``g``) of any supported checkpoint."""
    models = load_any(path, lr_mlp=lr_mlp)
    return models[_generator_key(path, which, {k: type(m) for k, m in models.items()})]


def generator_config(path, which="g_ema", lr_mlp=0.01):
    """The checked constructor config of the generator ``load_generator`` returns, without building it.

    For a run that needs the teacher's architecture before it builds its models (the student a
    distillation config derives), so the teacher is built once, inside the run's strategy. Refuses
    what ``load_generator`` refuses, in the same words, with one exception: the weights of a ``.keras``
    are read only when it is loaded (those of a ``.pt`` are read and checked against the architecture).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint {path} does not exist (check the path).")
    latent_avg = None
    if path.is_dir():
        files = _checkpoint_files(path)
        plans = {k: _checked_keras_config(f) for k, f in files.items() if k != "latent_avg"}
        if "latent_avg" in files:
            latent_avg = _load_latent_avg(files["latent_avg"], _style_dims(plans))
    elif path.suffix == ".keras":
        cls, config = _checked_keras_config(path)
        plans = {"g_ema" if cls is Generator else "d": (cls, config)}
    else:
        _, plans, latent_avg = _rosinality_plans(path, lr_mlp)
    classes = {k: cls for k, (cls, _) in plans.items()}
    if latent_avg is not None:  # named in the "holds no generator" message, as load_generator names it
        classes["latent_avg"] = type(latent_avg)
    return plans[_generator_key(path, which, classes)][1]


def _generator_key(path, which, classes):
    """The key of ``which``, else of ``g``, when it is a Generator in ``classes`` ({key: class})."""
    for key in (which, "g"):
        if classes.get(key) is Generator:
            return key
    raise ModelFileError(f"{path} holds no generator (found {sorted(classes)}); give a checkpoint with g_ema or g.")
