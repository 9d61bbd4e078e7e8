"""Reading and writing generators and discriminators in the formats users hold.

- rosinality/CAGAN/StyleKD ``.pt`` checkpoints ({'g', 'g_ema', 'd'[, 'latent_avg']}, or a bare
  state_dict): read without torch by a restricted unpickler, mapped by name (``convert.rosinality``).
- Our converted checkpoint: a directory with one Keras 3 ``.keras`` archive per network
  (``g_ema.keras``, ``g.keras``, ``d.keras``) and ``latent_avg.npy`` when the source had one.
  ``.keras`` stores the architecture config next to the weights, loads with
  ``keras.models.load_model`` in safe mode (no pickle, no code), and is what Keras users expect;
  training state (optimizers, step) lives in the trainer's ``tf.train.Checkpoint`` instead.
"""

import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np

from tf_distill.convert import rosinality
from tf_distill.convert.torch_pickle import load_torch_checkpoint, save_torch_checkpoint
from tf_distill.models import Generator

NETWORKS = ("g_ema", "g", "d")


def read_rosinality(path, lr_mlp=0.01):
    """{'g_ema'|'g'|'d': Keras model, 'latent_avg': array} from a rosinality ``.pt`` (or bare state_dict)."""
    ckpt = load_torch_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise rosinality.StateDictError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}.")
    if "conv1.conv.weight" in ckpt:  # a bare generator state_dict
        ckpt = {"g_ema": ckpt}
    if not any(k in ckpt for k in NETWORKS):
        raise rosinality.StateDictError(f"{path}: no 'g_ema', 'g' or 'd' state_dict and no generator parameters; "
                                        f"found keys {sorted(ckpt)[:8]}.")
    models = {}
    for key in ("g_ema", "g"):
        if key in ckpt:
            models[key] = _with_context(path, key, rosinality.generator_from_state_dict, ckpt[key], lr_mlp=lr_mlp)
    if "d" in ckpt:
        models["d"] = _with_context(path, "d", rosinality.discriminator_from_state_dict, ckpt["d"])
    if "latent_avg" in ckpt:
        models["latent_avg"] = np.asarray(ckpt["latent_avg"], np.float32).reshape(1, -1)
    return models


def _with_context(path, key, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except rosinality.StateDictError as err:
        raise rosinality.StateDictError(f"{path} [{key}]: {err}") from None


def write_rosinality(path, **models):
    """Writes Keras models (g_ema=, g=, d=, latent_avg=) as a rosinality ``.pt`` that torch.load(weights_only) reads."""
    ckpt = {}
    for key, model in models.items():
        if model is None:
            continue
        ckpt[key] = np.asarray(model, np.float32) if key == "latent_avg" else rosinality.state_dict(model)
    save_torch_checkpoint(ckpt, path)


def save_models(directory, **models):
    """Writes our checkpoint directory atomically: built in a sibling temp dir, then swapped in."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for key, model in models.items():
            if model is None:
                continue
            if key == "latent_avg":
                np.save(tmp / "latent_avg.npy", np.asarray(model, np.float32))
            else:
                model.save(tmp / f"{key}.keras")
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_models(directory):
    """Reads every network of our checkpoint directory."""
    directory = Path(directory)
    models = {k: keras.models.load_model(directory / f"{k}.keras") for k in NETWORKS
              if (directory / f"{k}.keras").exists()}
    if (directory / "latent_avg.npy").exists():
        models["latent_avg"] = np.load(directory / "latent_avg.npy", allow_pickle=False)
    if not models:
        raise FileNotFoundError(f"{directory} holds no g_ema.keras, g.keras or d.keras; convert a checkpoint with "
                                "tf-distill-convert first.")
    return models


def load_any(path, lr_mlp=0.01):
    """Networks from a ``.pt``, a ``.keras`` generator/discriminator, or our checkpoint directory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    if path.is_dir():
        return load_models(path)
    if path.suffix == ".keras":
        model = keras.models.load_model(path)
        return {"g_ema" if isinstance(model, Generator) else "d": model}
    return read_rosinality(path, lr_mlp=lr_mlp)


def load_generator(path, which="g_ema", lr_mlp=0.01):
    """The generator ``which`` (default the EMA generator, falling back to ``g``) of any supported checkpoint."""
    models = load_any(path, lr_mlp=lr_mlp)
    for key in (which, "g"):
        if isinstance(models.get(key), Generator):
            return models[key]
    raise ValueError(f"{path} holds no generator (found {sorted(models)}).")

