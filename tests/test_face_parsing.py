"""The face-parsing network and the content-aware KD mask against the reference (fixtures/face_parsing)."""

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from test_torch_pickle import SystemCall, write_legacy, write_zip
from tf_distill.io.torch_reader import load_torch_checkpoint
from tf_distill.io.torch_writer import save_torch_checkpoint
from tf_distill.errors import UserError
from tf_distill.losses.content_mask import apply_content_mask, content_mask, parse_faces
from tf_distill.models.face_parsing import FaceParsingNet, check_state_dict, load_face_parsing, state_dict_shapes

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("TF_DISTILL_FACE_PARSING_FIXTURES")
                or REPO.parent / "shared" / "fixtures" / "face_parsing")
TIE = 1e-3  # a top-1 minus top-2 logit margin below this may legitimately flip the argmax


def fixture(name):
    path = FIXTURES / name
    if not path.exists():
        pytest.fail(f"face-parsing fixture {path} is missing; set TF_DISTILL_FACE_PARSING_FIXTURES to its folder")
    return path


@pytest.fixture(scope="module")
def ref():
    return np.load(fixture("bisenet_reference.npz"))


@pytest.fixture(scope="module")
def net():
    return load_face_parsing(fixture("bisenet_random_fp16.pth"))


@pytest.fixture(scope="module")
def state_dict():
    return load_torch_checkpoint(fixture("bisenet_random_fp16.pth"))


def nhwc(x):
    return np.asarray(x).transpose(0, 2, 3, 1)


# ---------------------------------------------------------------- the network


def test_outputs_match_the_reference(net, ref):
    outs = net(nhwc(ref["net/input_nchw"]))
    for out, key in zip(outs, ("out", "out16", "out32")):
        expected = nhwc(ref[f"net/{key}"])
        assert out.shape == expected.shape == (2, 128, 128, 19)
        scale = np.abs(expected).max()
        assert np.abs(out.numpy() - expected).max() <= 1e-4 * scale, key


def test_parsing_and_mask_match_the_reference(net, ref):
    teacher, student = nhwc(ref["mask/teacher_nchw"]), nhwc(ref["mask/student_nchw"])
    margin = ref["mask/margin512"].astype(np.float32)
    classes = parse_faces(net, teacher).numpy()
    clear = margin > TIE
    assert classes.shape == (3, 512, 512) and clear.mean() > 0.99
    np.testing.assert_array_equal(classes[clear], ref["mask/parsing512"][clear])

    mask = content_mask(net, teacher)
    assert mask.shape == (3, 64, 64, 1) and mask.dtype == tf.float32
    # a 64 px pixel reads its 8x8 block at 512: excuse it only where that block holds a near-tie
    tie = (margin <= TIE).reshape(3, 64, 8, 64, 8).any(axis=(2, 4))
    assert tie.mean() < 0.05
    expected = ref["mask/mask64"].astype(np.float32)
    assert 0.2 < expected.mean() < 0.8  # the fixture has face, background and cloth
    np.testing.assert_array_equal(mask.numpy()[..., 0][~tie], expected[~tie])

    masked_t, masked_s = apply_content_mask(mask, teacher, student)
    for got, key in ((masked_t, "mask/masked_teacher_nchw"), (masked_s, "mask/masked_student_nchw")):
        np.testing.assert_array_equal(got.numpy()[~tie], nhwc(ref[key])[~tie], err_msg=key)


def test_mask_in_a_tf_function_and_without_gradient(net, ref):
    teacher = tf.constant(nhwc(ref["mask/teacher_nchw"]))
    student = tf.constant(nhwc(ref["mask/student_nchw"]))
    eager = content_mask(net, teacher, parse_size=128)
    compiled = tf.function(lambda t: content_mask(net, t, parse_size=128))(teacher)
    np.testing.assert_array_equal(compiled.numpy(), eager.numpy())
    assert 0 < eager.numpy().mean() < 1

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(teacher)
        mask = content_mask(net, teacher, parse_size=128)
        masked_t, masked_s = apply_content_mask(mask, teacher, student)
        loss = tf.reduce_sum(tf.abs(masked_t - masked_s))
        mask_sum = tf.reduce_sum(mask)
    assert tape.gradient(mask_sum, teacher) is None
    # d loss / d teacher = sign(T - S) * mask: only the product path, nothing through the mask
    expected = np.sign(teacher.numpy() - student.numpy()) * mask.numpy()
    np.testing.assert_array_equal(tape.gradient(loss, teacher).numpy(), expected)


_TWO_REPLICAS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tf_distill.losses.content_mask import content_mask
    from tf_distill.models.face_parsing import load_face_parsing

    ref = np.load(sys.argv[2])
    images = np.concatenate([ref["mask/teacher_nchw"], ref["mask/student_nchw"]]).transpose(0, 2, 3, 1)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        net = load_face_parsing(sys.argv[1])
    fn = lambda t: content_mask(net, t, parse_size=128)

    @tf.function
    def step(t):
        return strategy.gather(strategy.run(fn, args=(t,)), 0)

    ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(images).batch(6))
    two = step(next(iter(ds))).numpy()
    one = tf.function(fn)(tf.constant(images)).numpy()
    print(json.dumps({"shape": list(two.shape), "diff": int((two != one).sum()), "mean": float(one.mean())}))
""")


def test_two_replicas_give_the_same_mask_as_one():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", _TWO_REPLICAS, str(fixture("bisenet_random_fp16.pth")),
                           str(fixture("bisenet_reference.npz"))], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shape"] == [6, 64, 64, 1] and 0 < result["mean"] < 1
    assert result["diff"] == 0


# ---------------------------------------------------------------- the loader


def test_expected_names_are_the_fixture_names_and_the_model_variables(state_dict):
    shapes = state_dict_shapes()
    assert len(shapes) == 160 and len(state_dict) == 191  # 31 batch norms: 31 num_batches_tracked
    assert list(shapes) == [k for k in state_dict if not k.endswith("num_batches_tracked")]
    assert {k: v.shape for k, v in state_dict.items() if k in shapes} == shapes
    model = FaceParsingNet()
    assert list(model.params) == list(shapes)
    assert sum(int(np.prod(v.shape)) for v in model.params.values()) == sum(int(np.prod(s)) for s in shapes.values())
    assert not model.trainable_weights


def test_float32_and_wrapped_state_dicts_load(tmp_path, state_dict, net, ref):
    sd32 = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in state_dict.items()}
    path = tmp_path / "79999_iter.pth"
    save_torch_checkpoint({"state_dict": sd32}, path)
    loaded = load_face_parsing(path)
    x = nhwc(ref["net/input_nchw"])[:1, :64, :64]
    np.testing.assert_array_equal(loaded(x)[0].numpy(), net(x)[0].numpy())


def one_line_error(path, *fragments):
    with pytest.raises(UserError) as info:
        load_face_parsing(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_tiny_mismatching_files_are_refused(tmp_path):
    cases = {
        "missing": ({"cp.resnet.conv1.weight": np.zeros((64, 3, 7, 7), np.float32)},
                    "lacks the tensor 'cp.resnet.bn1.weight'"),
        "extra": ({"generator.weight": np.zeros(3, np.float32)}, "unexpected tensor 'generator.weight'"),
        "shape": ({"cp.resnet.conv1.weight": np.zeros((64, 3, 3, 3), np.float32)},
                  "'cp.resnet.conv1.weight' has shape (64, 3, 3, 3)"),
        "integer": ({"cp.resnet.conv1.weight": np.zeros((64, 3, 7, 7), np.int64)}, "not a floating tensor"),
        "list": ([np.zeros(3, np.float32)], "holds a list, not a state_dict"),
    }
    for name, (obj, fragment) in cases.items():
        path = tmp_path / f"{name}.pth"
        save_torch_checkpoint(obj, path)
        assert "79999_iter.pth" in one_line_error(path, fragment)


@pytest.mark.parametrize("change, fragment", [
    (lambda sd: sd.pop("conv_out32.conv_out.weight"), "lacks the tensor 'conv_out32.conv_out.weight'"),
    (lambda sd: sd.update({"cp.resnet.fc.weight": np.zeros((19, 512), np.float16)}),
     "unexpected tensor 'cp.resnet.fc.weight'"),
    (lambda sd: sd.update({"ffm.conv2.weight": np.zeros((256, 64, 3, 3), np.float16)}),
     "'ffm.conv2.weight' has shape (256, 64, 3, 3) where the face-parsing network needs (256, 64, 1, 1)"),
    (lambda sd: sd["cp.arm16.bn_atten.running_var"].__setitem__(3, np.nan), "holds NaN or infinite values"),
])
def test_every_tensor_is_checked(state_dict, change, fragment):
    sd = {k: v.copy() for k, v in state_dict.items()}
    change(sd)
    with pytest.raises(UserError) as info:
        check_state_dict(sd, where="w.pth")
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_num_batches_tracked_is_optional(state_dict):
    sd = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    out = check_state_dict(sd)
    assert list(out) == list(state_dict_shapes()) and all(v.dtype == np.float32 for v in out.values())


@pytest.mark.parametrize("fmt", [write_zip, write_legacy])
def test_malicious_pickle_is_refused_and_never_run(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = fmt(tmp_path / "79999_iter.pth", pickle.dumps({"w": SystemCall(marker)}, protocol=2))
    one_line_error(path, "system")
    assert not marker.exists()


def test_missing_and_corrupt_files(tmp_path):
    one_line_error(tmp_path / "79999_iter.pth", "no such file")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(fixture("bisenet_random_fp16.pth").read_bytes()[:100_000])
    one_line_error(truncated)
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    one_line_error(text, "not a PyTorch checkpoint")
