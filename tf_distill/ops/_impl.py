"""Chooses between the reference ops and the compiled custom ops.

The global default comes from the environment variable ``TF_DISTILL_OPS_IMPL``
(``auto``, ``ref`` or ``custom``); every op call may override it with ``impl=``.
"""

import os

IMPLS = ("auto", "ref", "custom")
ENV_VAR = "TF_DISTILL_OPS_IMPL"


def default_impl() -> str:
    impl = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if impl not in IMPLS:
        raise ValueError(f"{ENV_VAR}={impl!r} is not one of {IMPLS}; unset it or pick one of those.")
    return impl


def resolve_impl(impl) -> str:
    """Returns ``"ref"`` or ``"custom"`` for a requested impl (None means the global default)."""
    impl = default_impl() if impl is None else str(impl).lower()
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not one of {IMPLS}.")
    if impl == "ref":
        return "ref"
    from tf_distill.ops import _loader  # pylint: disable=import-outside-toplevel

    library = _loader.custom_ops_library()
    if library is not None:
        return "custom"
    if impl == "custom":
        raise RuntimeError(
            "impl='custom' was requested but the custom op library is not available: "
            f"{_loader.unavailable_reason()}. Build it with `custom_ops/build.sh`, "
            "or use impl='auto' / 'ref'.")
    return "ref"
