"""Shared test helpers: the reference fixtures (read in place) and NCHW/NHWC conversions."""

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FIXTURES = Path(os.environ.get("TF_DISTILL_FIXTURES",
                               Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference"))


def fixture_path(name):
    path = FIXTURES / name
    if not path.exists():
        pytest.fail(f"reference fixture {path} is missing; set TF_DISTILL_FIXTURES to the fixtures folder")
    return path


def load_npz(name):
    return np.load(fixture_path(name))


def state_dict_of(npz):
    return {k[len("state_dict/"):]: npz[k] for k in npz.files if k.startswith("state_dict/")}


def nchw(x):
    return np.asarray(x).transpose(0, 3, 1, 2)


def nhwc(x):
    return np.asarray(x).transpose(0, 2, 3, 1)
