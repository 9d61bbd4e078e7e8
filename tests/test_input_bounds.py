"""Non-finite and absurd generator inputs: InvalidArgument in the SavedModel signatures, one-line
errors in tf-distill-edit (and nothing written); valid inputs render as before."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_distill.errors import UserError
from tf_distill.export import savedmodel
from tf_distill.images import to_uint8
from tf_distill.models import Generator
from tf_distill.projection import edit

ROOT = Path(__file__).resolve().parents[1]
D, SIZE = 8, 16
BOUND = savedmodel.MAX_ABS_LATENT


def tiny_generator(seed=1):
    keras.utils.set_random_seed(seed)
    g = Generator(SIZE, style_dim=D, n_mlp=2, channels=[8] * 6)
    g.build()
    return g


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    g = tiny_generator()
    path = savedmodel.export_saved_model(g, tmp_path_factory.mktemp("models") / "student", w_avg_samples=64,
                                         max_batch=4)  # check_ops: the bound checks are stock ops too
    return g, tf.saved_model.load(str(path)).signatures, path


def _full(shape, value):
    x = np.zeros(shape, np.float32)
    x[(0,) * len(shape)] = value  # one bad entry among good ones
    return x


NL = 6  # n_latent of a 16 px generator
ONE = np.float32(1)
BAD_REQUESTS = [
    ("serving_default", dict(z=_full((2, D), np.nan), truncation_psi=ONE), "z must be finite"),
    ("serving_default", dict(z=_full((2, D), np.inf), truncation_psi=ONE), "z must be finite"),
    ("serving_default", dict(z=_full((2, D), 3e38), truncation_psi=ONE), "z entries must be in [-10000, 10000]"),
    ("serving_default", dict(z=_full((1, D), -2e4), truncation_psi=ONE), "z entries must be in [-10000, 10000]"),
    ("serving_default", dict(z=np.zeros((1, D), np.float32), truncation_psi=np.float32(np.nan)),
     "truncation_psi must be in [0, 1]"),
    ("serving_default", dict(z=np.zeros((1, D), np.float32), truncation_psi=np.float32(np.inf)),
     "truncation_psi must be in [0, 1]"),
    ("from_seeds", dict(seeds=np.zeros(1, np.int64), truncation_psi=np.float32(np.nan)),
     "truncation_psi must be in [0, 1]"),
    ("from_w", dict(w=_full((1, NL, D), np.nan), truncation_psi=ONE), "w must be finite"),
    ("from_w", dict(w=_full((1, NL, D), 3e38), truncation_psi=ONE), "w entries must be in [-10000, 10000]"),
    ("from_w", dict(w=_full((2, 1, D), -3e38), truncation_psi=np.float32(0.5)), "w entries must be in"),
    ("style_mix", dict(w1=np.zeros((1, NL, D), np.float32), w2=_full((1, NL, D), 3e38), layer_start=np.int32(0),
                       layer_end=np.int32(2), truncation_psi=ONE), "w2 entries must be in"),
    ("style_mix", dict(w1=_full((1, NL, D), np.nan), w2=np.zeros((1, NL, D), np.float32), layer_start=np.int32(0),
                       layer_end=np.int32(2), truncation_psi=ONE), "w1 must be finite"),
    ("mapping", dict(z=_full((1, D), 3e38)), "z entries must be in"),
    ("mapping", dict(z=_full((1, D), np.nan)), "z must be finite"),
]


@pytest.mark.parametrize("signature,inputs,message", BAD_REQUESTS, ids=[f"{s}-{m[:12]}" for s, _, m in BAD_REQUESTS])
def test_non_finite_and_absurd_inputs_are_invalid_argument(exported, signature, inputs, message):
    _, sig, _ = exported
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        sig[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    assert message in info.value.message


def test_valid_inputs_render_as_the_generator_does(exported):
    g, sig, path = exported
    rng = np.random.RandomState(0)
    z = rng.randn(2, D).astype(np.float32)
    wplus = rng.randn(2, NL, D).astype(np.float32)
    at_bound = np.where(rng.rand(2, NL, D) < 0.5, -BOUND, BOUND).astype(np.float32)  # the bound is inclusive

    def close(got, want):
        diff = np.abs(got.numpy().astype(int) - want.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99

    one = tf.constant(ONE)
    close(sig["serving_default"](z=tf.constant(z), truncation_psi=one)["images"], to_uint8(g(z).numpy()))
    for w in (wplus, at_bound):
        want = g(w, input_is_latent=True)
        assert np.isfinite(want.numpy()).all()  # images at the bound are still images, not NaN
        close(sig["from_w"](w=tf.constant(w), truncation_psi=one)["images"], to_uint8(want.numpy()))
    extremes = tf.constant([np.iinfo(np.int64).min, np.iinfo(np.int64).max], tf.int64)  # any int64 seed
    assert sig["from_seeds"](seeds=extremes, truncation_psi=one)["images"].shape == (2, SIZE, SIZE, 3)
    assert savedmodel.read_metadata(path)["max_abs_latent"] == BOUND


# --- tf-distill-edit -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gen():
    return tiny_generator(0)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_load_code_refuses_bad_codes(gen, tmp_path):
    good = np.zeros((1, NL, D), np.float32)
    noise = {f"teacher_noise_{j}": np.zeros((1, r, r, 1), np.float32)
             for j, r in enumerate(gen.synthesis.noise_shapes())}
    bad_noise = dict(noise, teacher_noise_2=np.full_like(noise["teacher_noise_2"], np.nan))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    cases = [
        (_npz(tmp_path / "nan.npz", teacher_wplus=_full((1, NL, D), np.nan)), "NaN or infinite"),
        (_npz(tmp_path / "inf.npz", teacher_wplus=_full((1, NL, D), -np.inf)), "NaN or infinite"),
        (_npz(tmp_path / "huge.npz", teacher_wplus=_full((1, NL, D), 3e38)), "beyond +-10000"),
        (_npz(tmp_path / "rows.npz", teacher_wplus=np.zeros((1, NL + 2, D), np.float32)), "needs [1, 6, 8]"),
        (_npz(tmp_path / "dim.npz", teacher_wplus=np.zeros((1, NL, D + 1), np.float32)), "needs [1, 6, 8]"),
        (_npz(tmp_path / "other.npz", student_wplus=good), "no projection for 'teacher'"),
        (_npz(tmp_path / "noise.npz", teacher_wplus=good, **bad_noise), "teacher_noise_2] holds NaN"),
        (_npz(tmp_path / "few.npz", teacher_wplus=good, teacher_noise_0=noise["teacher_noise_0"]), "1 teacher noise"),
        (str(corrupt), "not a readable projection"),
        (str(tmp_path / "missing.npz"), "is not a file"),
        ("seed:x", "unknown code 'seed:x'"),
        ("seed:99999999999999999999", "does not fit in int64"),
    ]
    for source, message in cases:
        with pytest.raises(UserError, match=None) as info:
            edit.load_code(gen, "teacher", source, "--a")
        assert message in str(info.value) and str(info.value).startswith("--a"), (source, str(info.value))
    wplus, got_noise = edit.load_code(gen, "teacher", _npz(tmp_path / "ok.npz", teacher_wplus=good, **noise), "--a")
    assert wplus.shape == (1, NL, D) and len(got_noise) == len(noise)
    seed_code, none = edit.load_code(gen, "teacher", "seed:3", "--b")
    assert seed_code.shape == (1, NL, D) and none is None


def test_flags_and_directions_are_checked(tmp_path):
    for values, message in [(["0", "nan"], "NaN or infinite"), (["inf"], "NaN or infinite"),
                            (["1e30"], "beyond +-10000"), (["x"], "not a list of numbers"), ([], "is empty")]:
        with pytest.raises(edit.EditError, match="--alphas") as info:
            edit.parse_floats(values, "--alphas")
        assert message in str(info.value)
    assert edit.parse_floats(["-10", "0.5", "1e4"], "--betas") == [-10.0, 0.5, 1e4]
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan] * 4, np.float32))
    np.save(tmp_path / "zero.npy", np.zeros(D, np.float32))
    np.save(tmp_path / "obj.npy", np.array(["a", "b"]))
    (tmp_path / "junk.npy").write_bytes(b"junk")
    (tmp_path / "broken.npy").write_bytes(b"PK\x03\x04junk")  # starts like a zip (.npz): numpy opens it as one
    for name, message in [("nan.npy", "NaN or infinite"), ("zero.npy", "all zeros"), ("obj.npy", "numeric"),
                          ("junk.npy", "not a readable .npy of directions (not a NumPy .npy/.npz file)"),
                          ("broken.npy", "not a readable .npy")]:
        with pytest.raises(edit.EditError) as info:
            edit.load_directions(tmp_path / name)
        assert message in str(info.value) and "pickle" not in str(info.value)  # was NumPy's offer to unpickle
    with pytest.raises(edit.EditError, match="direction has 9 entries"):
        edit.move(np.zeros((1, NL, D)), np.ones(9), [1.0])
    with pytest.raises(edit.EditError, match="direction_blocks"):
        edit.teacher_directions(tiny_generator(0), num_blocks=7)


def _edit(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "tf_distill.bin.edit", f"--output={tmp_path / 'out'}", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


@pytest.fixture(scope="module")
def keras_teacher(gen, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "teacher.keras"
    gen.save(path)
    return path


@pytest.mark.parametrize("case", ["nan_npz", "nan_alpha", "missing_checkpoint"])
def test_edit_binary_one_line_error_and_no_png(case, keras_teacher, tmp_path):
    nan_npz = _npz(tmp_path / "a.npz", teacher_wplus=_full((1, NL, D), np.nan))
    args, named = {
        "nan_npz": ([f"--teacher={keras_teacher}", "--mode=mix", f"--a={nan_npz}", "--b=seed:1"], "a.npz"),
        "nan_alpha": ([f"--teacher={keras_teacher}", "--mode=direction", "--a=seed:1", "--alphas=0,nan"], "--alphas"),
        "missing_checkpoint": ([f"--teacher={tmp_path / 'nope.keras'}", "--a=seed:1", "--b=seed:2"], "nope.keras"),
    }[case]
    proc = _edit(tmp_path, *args)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(errors) == 1 and named in errors[0], proc.stderr[-3000:]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
