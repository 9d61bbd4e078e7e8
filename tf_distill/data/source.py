"""What to read: a :class:`DataSource` (kind + location), also written as a one-line spec string.

==========================================  =================================================
spec string                                 meaning
==========================================  =================================================
``folder:/data/ffhq``                       PNG/JPEG files under the folder, recursively
``tfrecord:/data/ffhq-tfr``                 the folder's ``*.tfrecord*`` files
``tfrecord:/data/ffhq-*-of-00016.tfrecord`` files matching a glob pattern (or one file)
``fashion_mnist`` / ``fashion_mnist:test``  Debian's Fashion-MNIST, train (default) or test split
``fashion_mnist:train:/some/dir``           ... read from another folder
==========================================  =================================================
"""

import dataclasses

KINDS = ("folder", "tfrecord", "fashion_mnist")


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A dataset to read. ``path``: folder / TFRecord file, folder or glob / Fashion-MNIST folder (None = default)."""
    kind: str
    path: str = None
    split: str = "train"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Unknown data source kind {self.kind!r}; expected one of {', '.join(KINDS)}.")
        if self.kind != "fashion_mnist" and not self.path:
            raise ValueError(f"A {self.kind} data source needs a path.")
        if self.kind == "fashion_mnist" and self.split not in ("train", "test"):
            raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', got {self.split!r}.")

    @classmethod
    def folder(cls, path):
        return cls("folder", str(path))

    @classmethod
    def tfrecord(cls, pattern):
        return cls("tfrecord", str(pattern))

    @classmethod
    def fashion_mnist(cls, split="train", path=None):
        return cls("fashion_mnist", None if path is None else str(path), split)

    @classmethod
    def parse(cls, spec):
        """A source from its spec string (see the module docstring); a DataSource is returned as is."""
        if isinstance(spec, DataSource):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"A data source is a DataSource or a spec string, got {type(spec).__name__}.")
        kind, _, rest = spec.partition(":")
        if kind == "fashion_mnist":
            split, _, path = rest.partition(":")
            return cls.fashion_mnist(split or "train", path or None)
        if kind in ("folder", "tfrecord"):
            if not rest:
                raise ValueError(f"Data source {spec!r} needs a path: '{kind}:PATH'.")
            return cls(kind, rest)
        raise ValueError(f"Unknown data source {spec!r}; expected 'folder:PATH', 'tfrecord:PATH_OR_GLOB' or "
                         f"'fashion_mnist[:train|test[:PATH]]'.")

    def __str__(self):
        if self.kind == "fashion_mnist":
            return f"fashion_mnist:{self.split}" + (f":{self.path}" if self.path else "")
        return f"{self.kind}:{self.path}"
