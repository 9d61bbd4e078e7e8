"""The one exception type for problems the user can fix (bad flags, paths, files, configs, inputs).

Binaries print these as one line, ``error: <what> (<how to fix>)``, and exit non-zero; anything
else is a bug and keeps its traceback. Library errors that users cause subclass ``UserError``.
"""

import re


def first_few(items, limit):
    """``"a, b, c"``, or ``"a, b, c, ..."`` when there are more than ``limit``: the examples an error names."""
    items = list(items)
    return ", ".join(str(i) for i in items[:limit]) + (", ..." if len(items) > limit else "")


def reason(err, limit=300):
    """``err`` as a short one-line reason inside a message: its first line, without TensorFlow's wrapping
    (``{{function_node __wrapped__SaveV2_dtypes_333_device_/job:localhost/...}}`` before it, ``[Op:SaveV2]``
    after). NumPy's answer to a file that is neither .npy nor .npz (it "contains pickled (object) data", load
    it "unsafely using allow_pickle=") becomes what it means."""
    lines = str(err).strip().splitlines()
    text = re.sub(r"\{\{function_node [^}]*\}\}|\[Op:\w+\]( name:\s*\S*)?", " ", lines[0] if lines else "")
    text = " ".join(text.split())
    if "allow_pickle" in text:
        return "not a NumPy .npy/.npz file"
    return text[:limit] or type(err).__name__


class UserError(Exception):
    """An expected problem with the user's input; the message names it and says how to fix it."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))  # always one line
