"""Read a ``torch.jit.save`` archive's module tree inertly, without torch and without running it.

Why: pretrained metric networks (pytorch-fid's Inception) ship as TorchScript archives. Their
modules, pickled as ``__torch__.<qualname>`` objects, become :class:`ScriptObject` records (the
class name and the state dict) under the restricted reader of ``tf_distill.io.torch_reader``;
no code record of the archive is read or run.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from tf_distill.io.torch_reader import _ADMITTED, _ONLY, CheckpointError, _Global, _load, _load_zip, _Policy

__all__ = ["ScriptObject", "load_torchscript"]

# TorchScript (``torch.jit.save``) archives: modules and TorchScript classes are pickled as
# NEWOBJ(``__torch__.<qualname>``, ()) + BUILD(attribute dict); typed lists via
# ``torch.jit._pickle.build_*list``.


class _ScriptRecord(dict):
    """What NEWOBJ builds for an admitted ``__torch__.*`` class: its attributes, nothing else.

    One subclass per qualified name and per load (see :class:`_ScriptPolicy`), so the name survives
    and nothing set on these classes outlives the load.
    """

    __slots__ = ()
    qualname = "__torch__"

    def __new__(cls, *args):
        if args:
            raise CheckpointError(f"refused TorchScript object {cls.qualname!r:.120} built from arguments")
        return super().__new__(cls)

    def __init__(self, *args):  # dict.__init__ would take arguments; __new__ already refused them
        super().__init__()

    def __setstate__(self, state):
        if self or type(state) is not dict or not all(type(k) is str for k in state):
            raise CheckpointError(f"refused state of type {type(state).__name__} for TorchScript object "
                                  f"{self.qualname!r:.120}")
        self.update(state)


class ScriptObject(dict):
    """A TorchScript module or object, read inertly: its attributes (parameters, buffers,
    submodules, constants) as dict items, and ``qualname``, the ``__torch__.*`` class name."""

    __slots__ = ("qualname",)

    def __init__(self, qualname: str, items=()):
        super().__init__(items)
        self.qualname = qualname

    def __repr__(self):
        return f"ScriptObject({self.qualname!r}, {dict.__repr__(self)})"


def _typed_list_builder(kind: type, label: str) -> Callable[[Any], list]:
    def build(items):
        if type(items) is not list or not all(type(v) is kind for v in items):
            raise CheckpointError(f"invalid {label} argument {items!r:.80}: expected a list of {kind.__name__}")
        return items

    return build


_SCRIPT_GLOBALS = {f"torch.jit._pickle.build_{label}list": _Global(f"torch.jit._pickle.build_{label}list",
                                                                  _typed_list_builder(kind, f"build_{label}list"))
                   for label, kind in (("int", int), ("double", float), ("bool", bool))}
_SCRIPT_NAME = re.compile(r"__torch__(\.[A-Za-z_][A-Za-z0-9_]*)+")


class _ScriptPolicy(_Policy):
    """The torch reader's globals, typed-list builders, and ``__torch__.*`` classes as inert record classes."""

    def __init__(self):
        super().__init__({**_ADMITTED, **_SCRIPT_GLOBALS}, _ONLY + " (and TorchScript modules)")
        self._classes: dict[str, type] = {}

    def find(self, qualname: str):
        found = super().find(qualname)
        if found is None and _SCRIPT_NAME.fullmatch(qualname):
            if qualname not in self._classes:
                self._classes[qualname] = type("_ScriptRecord", (_ScriptRecord,),
                                               {"__slots__": (), "qualname": qualname})
            found = self._classes[qualname]
        return found

    def container(self, obj):
        return ScriptObject(obj.qualname) if isinstance(obj, _ScriptRecord) else None


def _read_torchscript(fh, head: bytes) -> Any:
    if head[:2] != b"PK":
        raise CheckpointError("empty file" if not head else "not a TorchScript archive (not a zip file)")
    return _load_zip(fh, _ScriptPolicy())


def load_torchscript(source) -> "ScriptObject":
    """Load a ``torch.jit.save`` archive's module tree (path or bytes) without torch and without running it.

    Only ``<archive>/data.pkl`` and its tensor records are read, under the same rules as
    :func:`tf_distill.io.torch_reader.load_torch_checkpoint`, except that ``__torch__.*`` classes are
    admitted as inert :class:`ScriptObject` records (attributes as dict items, parameters as numpy arrays) and
    ``torch.jit._pickle.build_{int,double,bool}list`` as typed lists. The archive's code is
    never read; tensor constants (``constants.pkl``) are not supported.
    """
    return _load(source, _read_torchscript)
