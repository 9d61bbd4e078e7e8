"""What the bench scripts share: the flags several of them take, defined once, and the ops choice.

Each bench runs like the binaries in tf_distill/bin: absl flags and ``cli.run(main)``, so a bad
flag or a problem the user can fix ends in one ``error: ...`` line (exit 2 for flags). A script
defines only the shared flags it takes, through the functions here, so that a flag has one name,
meaning and bound in every script. Run as ``python bench/<name>.py``, this folder is on
``sys.path``, so the scripts ``import common``.
"""

import time

from absl import flags

from tf_distill.errors import UserError

IMPLS = ("auto", "ref", "custom")  # tf_distill.ops.IMPLS, which imports TensorFlow (tested equal)


def define_impl():
    """``--impl``: the ops implementation the benchmarked models are built and traced with."""
    return flags.DEFINE_enum("impl", "auto", IMPLS, "Ops implementation: ref (plain TensorFlow), custom (the "
                             "compiled kernels of custom_ops/build.sh) or auto (custom when built, else ref).")


def define_batch(default, help="Images per batch."):  # noqa: A002
    return flags.DEFINE_integer("batch", default, help, lower_bound=1)


def define_repeats(default, help="Timed repeats per measurement; the median is reported."):  # noqa: A002
    return flags.DEFINE_integer("repeats", default, help, lower_bound=1)


class _ListParser(flags.ListParser):
    """``a,b,c`` -> [item(a), item(b), item(c)]; a bad item is a flag error (one line, exit 2)."""

    def __init__(self, item, what):
        super().__init__()
        self._item, self._what = item, what

    def parse(self, argument):
        items = super().parse(argument)
        if not items:
            raise ValueError(f"give at least one {self._what}")
        return [self._item(item) for item in items]

    def flag_type(self):
        return f"comma-separated list of {self._what}s"


def _positive_int(item):
    try:
        value = int(item)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise ValueError(f"{item!r} is not a positive integer")
    return value


def define_int_list(name, default, help):  # noqa: A002
    """``--name=64,128``: integers >= 1."""
    return flags.DEFINE(_ListParser(_positive_int, "integer"), name, default, help,
                        serializer=flags.CsvListSerializer(","))


def define_choice_list(name, default, choices, help):  # noqa: A002
    """``--name=a,b``: each one of ``choices``."""
    def choice(item):
        if item not in choices:
            raise ValueError(f"{item!r} is not one of {', '.join(choices)}")
        return item

    return flags.DEFINE(_ListParser(choice, "name"), name, default, f"{help} One or more of: {', '.join(choices)}.",
                        serializer=flags.CsvListSerializer(","))


def require_custom_ops(what):
    """Raises UserError when the compiled custom op library does not load (``what`` needs it)."""
    from tf_distill.ops import _loader  # pylint: disable=import-outside-toplevel  # loads TensorFlow

    if _loader.custom_ops_library() is None:
        raise UserError(f"{what} needs the custom op library, which is not available: "
                        f"{_loader.unavailable_reason()} (build it with custom_ops/build.sh, or use the reference ops)")


def check_impl(impl):
    """Fails early, with one line, for ``--impl=custom`` on a machine without the custom op library."""
    if impl == "custom":
        require_custom_ops("--impl=custom")


def timed_in_turns(calls, repeats, min_seconds=0.5):
    """{name: [seconds per call]} of the zero-argument ``calls``, timed in turns so that a change in the
    machine's load hits every model alike.

    Each repeat runs every call in turn: one untimed call first (the steady state a server of that
    one model sees: the model that ran before leaves its caches and freed memory behind), then as
    many timed calls in a row as fill ``min_seconds`` (a short call timed once is mostly noise).
    """
    counts = {}
    for name, fn in calls.items():
        fn()  # the first call builds the executor
        start = time.perf_counter()
        fn()
        counts[name] = max(1, round(min_seconds / (time.perf_counter() - start)))
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            fn()
            start = time.perf_counter()
            for _ in range(counts[name]):
                fn()
            times[name].append((time.perf_counter() - start) / counts[name])
    return times
