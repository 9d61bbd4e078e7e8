"""What every binary shares: one-line errors for problems users can fix, and a quiet console.

    def run():
        cli.run(main)

Expected problems (``UserError``, file-system errors, bad flags) print ``error: <what> (<how to
fix>)`` to stderr and exit 1 (2 for bad flags); ``--debug`` shows the traceback instead. Anything
else is a bug and keeps its traceback.
"""

import errno
import os
import sys

from absl import app, flags

from tf_distill.errors import UserError

_DEBUG = flags.DEFINE_bool("debug", False, "Show full tracebacks instead of one-line errors.")

_OS_HINTS = {
    errno.ENOSPC: "free disk space, or choose another output folder",
    errno.EDQUOT: "free disk space, or choose another output folder",
    errno.EROFS: "the file system is read-only; choose a writable output folder",
    errno.EACCES: "check the permissions, or choose another path",
    errno.EPERM: "check the permissions, or choose another path",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a parent of the path is a file, not a folder; choose another path",
    errno.EISDIR: "the path is a folder; give a file",
    errno.EEXIST: "choose another path",
}


def quiet_logs():
    """Our progress lines, not TensorFlow's or absl's INFO (oneDNN notices, checkpoint sharding, retracing).

    Warnings and errors still reach the console. Call before TensorFlow is imported.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging  # pylint: disable=import-outside-toplevel

    logging.set_verbosity(logging.WARNING)


def describe(err):
    """The one-line message of an expected error, or None if ``err`` is a bug."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, MemoryError):
        return "out of memory (use a smaller batch or model, or a machine with more memory)"
    if isinstance(err, OSError) and err.errno in _OS_HINTS:
        what = err.strerror or str(err)
        name = f": {err.filename}" if err.filename else ""
        return f"{what}{name} ({_OS_HINTS[err.errno]})"
    if type(err).__name__ == "ResourceExhaustedError":
        return f"out of memory: {str(err).splitlines()[0][:300]} (use a smaller batch or model)"
    return None


def fail(message, code=1):
    """Prints ``error: message`` and exits with ``code``."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(code)


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        fail(_flag_message(err), 2)
    except UserError as err:
        fail(str(err), 2)


def _flag_message(err):
    text = " ".join(str(err).split())
    if "Pass --helpshort" not in text:
        text += " (see --helpshort)"
    return text


def run(main):
    """``absl.app.run(main)`` with one-line errors for bad flags and expected problems."""
    quiet_logs()

    def guarded(argv):
        try:
            return main(argv)
        except app.UsageError as err:
            if _DEBUG.value:
                raise
            fail(f"{err} (see --helpshort)", 2)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as err:  # pylint: disable=broad-except
            message = describe(err)
            if message is None or _DEBUG.value:
                raise
            fail(message)

    app.run(guarded, flags_parser=_parse_flags)
