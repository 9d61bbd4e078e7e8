"""The ops implementation is a parameter, a scope or the process default, never the environment."""

import pathlib
import threading

import numpy as np
import pytest

from tf_distill import cli, ops
from tf_distill.ops import choice

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tf_distill"


@pytest.fixture(autouse=True)
def _fresh_default(monkeypatch):
    monkeypatch.setattr(choice, "_DEFAULT", {"impl": "auto"})


def test_parameter_beats_scope_beats_default_and_scopes_nest():
    assert choice.requested() == "auto"
    ops.set_default_implementation("REF")
    assert choice.requested() == "ref"
    with ops.implementation("custom"):
        assert choice.requested() == "custom"
        with ops.implementation("auto"):
            assert choice.requested() == "auto" and choice.requested("ref") == "ref"
        assert choice.requested() == "custom"
    assert choice.requested() == "ref"
    with pytest.raises(ValueError, match="impl='fast' is not one of auto, ref, custom"):
        ops.set_default_implementation("fast")
    with pytest.raises(ValueError, match="impl='fast'"):
        with ops.implementation("fast"):
            pass
    assert choice.requested() == "ref"


def test_scope_is_restored_after_an_exception():
    with pytest.raises(KeyError):
        with ops.implementation("ref"):
            raise KeyError("boom")
    assert choice.requested() == "auto"


def test_scope_belongs_to_its_thread():
    seen, inside, release = {}, threading.Event(), threading.Event()

    def worker():
        with ops.implementation("custom"):
            inside.set()
            release.wait(10)
            seen["worker"] = choice.requested()

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(10)
    with ops.implementation("ref"):
        seen["main"] = choice.requested()
        release.set()
        thread.join()
    assert seen == {"main": "ref", "worker": "custom"}
    ops.set_default_implementation("ref")  # the process default is shared by every thread
    other = []
    thread = threading.Thread(target=lambda: other.append(choice.requested()))
    thread.start()
    thread.join()
    assert other == ["ref"]


def test_ops_follow_the_scope(monkeypatch):
    called = []

    def resolve(impl, op_name, self_check):
        called.append((op_name, impl, choice.requested(impl)))
        return "ref"

    monkeypatch.setattr(choice, "resolve", resolve)
    x = np.zeros((1, 4, 4, 1), np.float32)
    with ops.implementation("custom"):
        ops.upfirdn2d(x, np.ones((1, 1), np.float32))
        ops.fused_bias_act(x, impl="ref")
    assert called == [("upfirdn2d", None, "custom"), ("fused_bias_act", "ref", "ref")]


def test_no_library_module_reads_the_environment_for_the_ops_choice():
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "TF_DISTILL_OPS_IMPL" in p.read_text())
    assert users == ["cli.py"], users  # the binaries' one mapping (below)


def test_binaries_map_the_environment_variable(monkeypatch, capsys):
    monkeypatch.delenv(cli.OPS_IMPL_ENV, raising=False)
    cli.ops_implementation_from_environment()
    assert choice.requested() == "auto"
    monkeypatch.setenv(cli.OPS_IMPL_ENV, " Ref ")
    cli.ops_implementation_from_environment()
    assert choice.requested() == "ref"
    monkeypatch.setenv(cli.OPS_IMPL_ENV, "fast")
    with pytest.raises(SystemExit) as exit_info:
        cli.ops_implementation_from_environment()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TF_DISTILL_OPS_IMPL='fast'" in err and "auto, ref, custom" in err, err
