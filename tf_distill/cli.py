"""What every binary shares: one-line errors for problems users can fix, and a quiet console.

    def run():
        cli.run(main)

Expected problems (``UserError``, file-system errors, bad flags) print ``error: <what> (<how to
fix>)`` to stderr and exit 1 (2 for bad flags); ``--debug`` shows the traceback instead. Anything
else is a bug and keeps its traceback.
"""

import contextlib
import difflib
import errno
import logging as std_logging
import os
import re
import signal
import sys
import tempfile

from absl import app, flags

from tf_distill.errors import UserError, reason

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
    errno.ENAMETOOLONG: "a name in the path is too long for the file system; choose a shorter path",
    errno.ELOOP: "the path runs through a symbolic link loop; fix the link or choose another path",
}


_PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def quiet_logs():
    """Our progress lines, not TensorFlow's or absl's INFO (oneDNN notices, checkpoint sharding, retracing).

    Warnings and errors still reach the console. Call before TensorFlow is imported.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging  # pylint: disable=import-outside-toplevel

    logging.set_verbosity(logging.WARNING)


class _ConsoleFormatter(std_logging.Formatter):
    """``warning: <message>``, as our own console lines read, instead of absl's ``W1206 12:00:00.0 1 file.py:68]``."""

    def format(self, record):
        return f"{record.levelname.lower()}: {super().format(record)}"


def plain_log_lines():
    """Our warnings (absl ``logging.warning``: e.g. a skipped undecodable image) as plain ``warning:`` lines.

    Call once ``absl.app`` has set up its handler (inside ``main``); ``--debug`` keeps absl's prefix.
    """
    from absl import logging  # pylint: disable=import-outside-toplevel

    if not _DEBUG.value:
        logging.get_absl_handler().setFormatter(_ConsoleFormatter())


# Start-up notices TensorFlow's CUDA build prints on a machine without a GPU, before its log
# settings apply (TF_CPP_MIN_LOG_LEVEL does not silence them).
_NO_GPU_NOTICES = re.compile(r"All log messages before absl::InitializeLog|oneDNN custom operations|"
                             r"cudart_stub\.cc.*Could not find cuda drivers|cuda_platform\.cc.*failed call to cuInit|"
                             r"cpu_feature_guard\.cc|^To enable the following instructions|"
                             r"oneDNN supports DT_INT32 only on platforms with AVX-512")


@contextlib.contextmanager
def no_gpu_notices():
    """Filters TensorFlow's no-GPU start-up notices out of what is written to stderr meanwhile.

    Every other line is passed on, and on a machine with an NVIDIA device nothing is captured:
    there a failed cuInit is a real problem.
    """
    if os.path.exists("/dev/nvidiactl"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not _NO_GPU_NOTICES.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def import_tensorflow():
    """Imports TensorFlow and finds its devices (cuInit) without the no-GPU notices; quiets its Python logger."""
    with no_gpu_notices():
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        tf.config.list_physical_devices()
        tf.config.list_logical_devices()  # the runtime context (cuInit again in some builds)
        # With oneDNN on, the first graph that transposes an int32 tensor (a GAN step's gradients do) logs
        # "E0000 ... oneDNN supports DT_INT32 only on platforms with AVX-512. Falling back to the default
        # Eigen-based implementation" on any CPU: informational (Eigen's transpose runs), and logged once per
        # process (a call_once in TensorFlow's util.cc), so it is logged here, where it is filtered.
        tf.function(tf.transpose)(tf.zeros([1, 2], tf.int32))  # an input: Grappler would fold a constant
    tf.get_logger().setLevel("ERROR")  # TensorFlow's Python warnings about its internals (retracing)
    return tf


OPS_IMPL_ENV = "TF_DISTILL_OPS_IMPL"


def ops_implementation_from_environment():
    """``$TF_DISTILL_OPS_IMPL`` (auto, ref or custom), when set, becomes the process's ops default.

    The binaries' one mapping of the environment onto ``tf_distill.ops.set_default_implementation``;
    the library itself never reads it. A bad value stops the binary with a one-line error.
    """
    value = os.environ.get(OPS_IMPL_ENV, "").strip()
    if not value:
        return
    from tf_distill import ops  # pylint: disable=import-outside-toplevel

    try:
        ops.set_default_implementation(value)
    except ValueError:
        fail(f"{OPS_IMPL_ENV}={value!r} is not an ops implementation (set it to one of {', '.join(ops.IMPLS)}, "
             "or unset it)", 2)


def describe(err):
    """The one-line message of an expected error, or None if ``err`` is a bug."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, MemoryError):
        return "out of memory (use a smaller batch or model, or a machine with more memory)"
    if isinstance(err, _PATH_ERRORS) and err.errno is None:  # raised by our code with a full message
        return str(err)
    quoted = quoted_user_error(err)
    if quoted is not None:
        return quoted
    if type(err).__name__ in ("NotFoundError", "PermissionDeniedError", "DataLossError", "FailedPreconditionError") \
            and type(err).__module__.startswith("tensorflow"):  # tf.io / tf.data on a user's file
        return f"{reason(err, 400)} (check the file or path)"
    if isinstance(err, RuntimeError) and str(err).startswith("Symlink loop from "):  # pathlib's resolve() (< 3.13)
        return f"{str(err)[:400]} ({_OS_HINTS[errno.ELOOP]})"
    if isinstance(err, OSError) and err.errno in _OS_HINTS:
        what = err.strerror or str(err)
        name = f": {err.filename}" if err.filename else ""
        return f"{what}{name} ({_OS_HINTS[err.errno]})"
    if type(err).__name__ == "ResourceExhaustedError":
        first = reason(err)
        if "No space left on device" in first:  # TensorFlow's file writes (SavedModel, checkpoints) report ENOSPC so
            return f"{first} ({_OS_HINTS[errno.ENOSPC]})"
        return f"out of memory: {first} (use a smaller batch or model)"
    return None


def quoted_user_error(err):
    """The message of a :class:`UserError` raised inside a TensorFlow op (a tf.data pipeline's py_function, e.g. a
    dataset none of whose images decode), which TensorFlow re-raises as its own error quoting ``Name: message``;
    None when ``err`` is not such an error."""
    if not type(err).__module__.startswith("tensorflow"):
        return None
    names, todo = set(), [UserError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    for match in re.finditer(r"\b(\w+): ([^\n]+)", str(err)):
        if match.group(1) in names:
            return match.group(2).strip()
    return None


def fail(message, code=1):
    """Prints ``error: message`` and exits with ``code``."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(code)


def _flags_parser(tensorflow):
    def parse(argv):
        with no_gpu_notices():  # config files may import TensorFlow
            rest = _parse_flags_or_fail(argv)
            if tensorflow:
                import_tensorflow()
                ops_implementation_from_environment()
        return rest

    return parse


def config_path(value):
    """A ``--config`` value: ``configs/NAME.py[:arg]`` that is not there from the working directory names the
    installed config of that name (configs/ is installed as ``tf_distill.configs``); anything else unchanged."""
    path, colon, arg = value.partition(":")
    if os.path.exists(path) or not path.startswith("configs/"):
        return value
    from tf_distill import configs  # pylint: disable=import-outside-toplevel

    installed = os.path.join(os.path.dirname(configs.__file__), path[len("configs/"):])
    return installed + colon + arg if os.path.exists(installed) else value


def name_default_config(name, path):
    """Puts ``--NAME=path`` into ``sys.argv`` when it names no ``--NAME``; returns the argument added (or None).

    ml_collections applies ``--NAME.KEY=V`` overrides to a *default* config file as the flag is defined, at
    import, where a misspelt key is a traceback; with the file named on the command line they are applied
    when the flags are parsed, where :func:`run` reports them in one line (with the closest key).
    Call before ``DEFINE_config_file``.
    """
    pattern = re.compile(rf"^--?{re.escape(name)}(=|$)")
    if any(pattern.match(arg) for arg in sys.argv[1:]):
        return None
    added = f"--{name}={path}"
    sys.argv[1:1] = [added]  # first, so that every --NAME.KEY follows it (ml_collections requires that order)
    return added


def _with_config_paths(argv):
    """``argv`` with every config flag's file resolved by :func:`config_path` (``--config=F`` or ``--config F``)."""
    names = {f"--{flag.name}" for flag in _config_flags()}
    out = list(argv)
    for i, arg in enumerate(out):
        name, eq, value = arg.partition("=")
        if name in names and eq:
            out[i] = f"{name}={config_path(value)}"
        elif arg in names and i + 1 < len(out):
            out[i + 1] = config_path(out[i + 1])
    return out


def _parse_flags_or_fail(argv):
    argv = _with_config_paths(argv)
    try:
        return _parse_and_load_configs(argv)
    except Exception as err:  # pylint: disable=broad-except
        message = _parse_failure_message(err, argv)
        if message is None:
            raise
        fail(message, 2)


def _parse_and_load_configs(argv):
    """``flags.FLAGS(argv)``, with each config file loaded now, not mid-run."""
    rest = flags.FLAGS(argv)
    for flag in _config_flags():
        if flag.present and not hasattr(flag.value, "keys"):
            raise UserError(f"the config file {flag.config_filename}: get_config() returned "
                            f"{type(flag.value).__name__}, not a ConfigDict ({_CONFIG_FIX})")
        if flag.value is not None:
            flag.value.keys()  # an unreadable config file raises here
    return rest


def _parse_failure_message(err, argv):
    """The one-line error for ``err``, raised while parsing the flags; None keeps the traceback: a bug, or the
    user's config file failing under ``--debug``."""
    failed = _config_file_failure(err)
    if failed is not None:  # a syntax error, a failed import, get_config() missing or raising
        path, cause = failed
        return None if "--debug" in argv else (
            f"cannot load the config file {path}: {type(cause).__name__}: {cause} ({_CONFIG_FIX}; --debug shows the "
            "traceback)")
    if type(err).__name__ == "UnsupportedOperationError":  # ml_collections: an override of a list field
        field = re.search(r"(\S+) of field (\S+) is not supported", str(err))
        what = f"field {field.group(2)} is a {field.group(1).strip('<>')}" if field else reason(err, 200)
        return (f"{what}, which cannot be set from the command line (make it a tuple in the config file, then pass "
                "--config.KEY='(a, b)')")
    if isinstance(err, flags.Error):
        return _flag_message(err)
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, (AttributeError, KeyError)):  # ml_collections: an override of a key the config lacks
        return _unknown_key_message(argv) or f"bad config override: {err} (see the config file for its keys)"
    if isinstance(err, OSError):  # ml_collections: the config file could not be read
        text = " ".join(str(err.__cause__ or err).split())  # its lines: the file name is on a later one
        return f"cannot load the config file: {text[:300]} (check the --config path)"
    return None


_CONFIG_FIX = "a config file is Python whose get_config() returns a ConfigDict, as configs/*.py do"


def _config_file_failure(err):
    """``(path, exception)`` when ``err`` was raised while ml_collections ran a config file (it runs the file and
    its get_config() as it parses the flag): the first exception of ``err``'s chain raised inside that run,
    else None. absl recasts a TypeError or ValueError as a flag error whose context is the original."""
    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__context__
    for exc in reversed(chain):  # the original first
        tb = exc.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code.co_name == "parse" and type(frame.f_locals.get("self")).__name__ == "ConfigFileFlagParser":
                return frame.f_locals.get("path"), exc
            tb = tb.tb_next
    return None


def _config_flags():
    return [f for f in set(flags.FLAGS._flags().values())  # pylint: disable=protected-access
            if type(f).__name__ == "_ConfigFlag"]


def _flat_keys(config, prefix=""):
    keys = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        keys.append(path)
        if hasattr(value, "items") and not isinstance(value, dict):
            keys.extend(_flat_keys(value, path + "."))
    return keys


def _unknown_key_message(argv):
    """``unknown config key --config.train.lrr (did you mean --config.train.lr?)`` for the first bad override."""
    for flag in _config_flags():
        source = next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag.name}=")), None)
        if source is None:
            continue
        try:
            keys = set(_flat_keys(flag.parser.parse(source)))
        except Exception:  # pylint: disable=broad-except
            return None
        for arg in argv:
            if arg.startswith(f"--{flag.name}."):
                key = arg[len(flag.name) + 3:].split("=", 1)[0]
                if key not in keys:
                    close = difflib.get_close_matches(key, sorted(keys), n=1, cutoff=0.5)
                    hint = f"did you mean --{flag.name}.{close[0]}?" if close else f"see {source} for its keys"
                    return f"unknown config key --{flag.name}.{key} ({hint})"
    return None


def _flag_message(err):
    text = " ".join(str(err).split())
    if "Pass --helpshort" not in text:
        text += " (see --helpshort)"
    return text


class Terminated(BaseException):
    """SIGTERM (a batch scheduler's time limit, ``kill``), raised in the main thread like Ctrl-C's KeyboardInterrupt,
    so that what a binary was writing is cleaned up (staged folders, temporary files) instead of left half-done.
    A BaseException, so that no ``except Exception`` on the way swallows it. Training loops catch the signal
    themselves while they run, to checkpoint first."""


def _raise_terminated(signum, frame):  # pylint: disable=unused-argument
    raise Terminated()


def run(main, tensorflow=True):
    """``absl.app.run(main)`` with one-line errors for bad flags and expected problems.

    ``tensorflow=True`` imports TensorFlow once the flags are parsed (bad flags fail fast), without
    its no-GPU notices; binaries that never touch it pass False.
    """
    quiet_logs()

    def guarded(argv):
        plain_log_lines()
        signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return main(argv)
        except app.UsageError as err:
            if _DEBUG.value:
                raise
            fail(f"{err} (see --helpshort)", 2)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Terminated:
            fail("terminated (SIGTERM)", 128 + signal.SIGTERM)
        except Exception as err:  # pylint: disable=broad-except
            message = describe(err)
            if message is None or _DEBUG.value:
                raise
            fail(message)

    app.run(guarded, flags_parser=_flags_parser(tensorflow))
