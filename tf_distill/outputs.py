"""Output paths that never destroy what a user already has.

Every binary that writes checks its output first (``check_output``): an existing non-empty folder
or file is refused unless the user passed ``--overwrite``, and an output that holds one of the
inputs is refused even then. Folders are staged in a hidden sibling and renamed into place
(``staged_directory``), files through a temporary sibling (``atomic_path``), with normal
permissions (the umask's, not ``mkdtemp``'s 0700).
"""

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tf_distill.errors import UserError, first_few


def lies_in(path, folder):
    """Whether ``path`` is ``folder`` or inside it, after resolving both (symbolic links, ``..``)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def check_output(path, *, overwrite=False, inputs=(), flag="--output", kind="folder", replaces=None):
    """``path`` as a Path once it is safe to write there as a ``kind`` ("folder" or "file"); else UserError.

    ``replaces``: for a folder written whole (``staged_directory``: what it held is deleted), the names it may
    hold for ``overwrite`` to replace it (what this writes there); a folder holding anything else is refused.
    """
    path = Path(path)
    resolved = path.resolve()
    for item in inputs:
        item = Path(item).resolve()
        if lies_in(item, resolved):
            raise UserError(f"{flag}={path} holds the input {item}, which writing there would destroy "
                            f"(choose an output outside it)")
    check_parents(path, flag)
    if kind == "folder":
        if path.exists() and not path.is_dir():
            raise UserError(f"{flag}={path} is a file; a folder is written there (choose a folder path)")
        foreign = sorted(e.name for e in path.iterdir() if e.name not in replaces) \
            if replaces is not None and path.is_dir() else []
        if foreign:  # even with overwrite
            raise UserError(f"{flag}={path} holds {first_few(foreign, 3)}, which this does not write and replacing "
                            "the folder would delete (move it out, or choose a new folder)")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise UserError(f"{flag}={path} exists and is not empty (choose a new folder, or pass --overwrite "
                            "to replace what it holds)")
    else:
        if path.is_dir():
            raise UserError(f"{flag}={path} is a folder; a file is written there (give a file path)")
        if path.exists() and not overwrite:
            raise UserError(f"{flag}={path} exists (choose a new path, or pass --overwrite to replace it)")
    check_writable(path, flag)
    return path


def check_writable(path, flag="--output"):
    """Refuses a path in a folder nobody can write to (tried with an unnamed temporary file, so read-only
    mounts count even for root); creates nothing."""
    folder = Path(path)
    while not folder.is_dir():
        if folder.exists() or folder.parent == folder:
            return  # a file in the way: check_parents names it
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(f"{flag}={path}: cannot write in {folder}: {err.strerror or err} "
                        "(choose a writable folder)") from None


def check_workdir(path, markers, *, overwrite=False, flag="--workdir"):
    """A working folder is ours to resume (it holds one of ``markers``), new, or empty; else UserError.

    ``overwrite`` here means "use this folder anyway": nothing in it is deleted.
    """
    path = Path(path)
    check_parents(path, flag)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag}={path} is a file (give a folder)")
    if path.is_dir() and any(path.iterdir()) and not overwrite \
            and not any((path / marker).exists() for marker in markers):
        raise UserError(f"{flag}={path} holds files of something else (choose a new folder, or pass --overwrite to "
                        "write into it anyway; nothing there is deleted)")
    return path


def check_parents(path, flag="--output"):
    """Refuses a path below a file (``out.png/x``), which no write could create."""
    for parent in Path(path).resolve().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{flag}={path}: {parent} is a file, not a folder (choose another path)")
            return


def make_dirs(path):
    """``mkdir -p`` with the umask's permissions; a clear error when a parent is a file."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise UserError(f"cannot create folder {path}: a part of the path is a file (choose another path)") from err
    return path


@contextlib.contextmanager
def staged_directory(path):
    """Yields a hidden sibling folder to fill; on success it replaces ``path`` in one rename.

    An existing ``path`` is moved aside first and removed only after the new folder is in place;
    on failure the staging folder is removed, and so are the parents it created, and ``path`` is untouched.
    """
    path = Path(path)
    created = _missing_folders(path.parent)
    make_dirs(path.parent)
    stage = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    stage.mkdir()  # the umask's permissions (mkdtemp would make it 0700)
    old = None
    try:
        yield stage
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
        os.replace(stage, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    finally:
        if old is not None and old.exists() and not path.exists():  # stopped between the two renames (Ctrl-C)
            os.replace(old, path)
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        if not path.exists():
            _remove_if_empty(created)


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary sibling of ``path`` to write; renames it to ``path`` only if the block succeeds.

    The temporary name keeps the suffix (PIL and ``np.savez`` pick the format from it) and is
    created by the writer, so the file gets the umask's permissions (``mkstemp`` would give 0600). On failure
    the parents it created are removed too.
    """
    path = Path(path)
    created = _missing_folders(path.parent)
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
        if not path.exists():
            _remove_if_empty(created)


def _missing_folders(path):
    """``path`` and those of its parents that do not exist yet, deepest first: what ``make_dirs`` creates."""
    path, missing = Path(path), []
    while not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    return missing


def _remove_if_empty(folders):
    """Removes ``folders`` (deepest first) while they are empty: a failed write leaves no empty folders behind."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (something else wrote there since), or gone: not ours to remove
            return


def write_file_atomic(path, data):
    """Writes bytes or text to ``path`` through a temporary sibling and a rename; returns the path."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
    return Path(path)


WORKDIR_LOCK = ".lock"  # in a training workdir while a run writes there
RUN_FOLDERS = ("checkpoints", "tb", "samples", "final")  # what a training run writes in its workdir (train/loop.py)


class WorkdirLock:
    """An exclusive lock on a working folder while one run writes there.

    A training command started twice on the same workdir (a second terminal, a job resubmitted while the
    first still runs) would restore the same checkpoint and then overwrite the other run's checkpoints,
    samples and logs step by step; the second one stops instead, naming the first. ``flock`` on
    ``WORKDIR_LOCK``: the kernel releases it when the holder exits, however it exits (SIGKILL included),
    so a stale lock cannot block a resume. File systems without locks (some network mounts) run unlocked
    with a warning.
    """

    def __init__(self, path):
        self.path, self._file = Path(path), None

    def acquire(self):
        """Takes the lock (a no-op while held); UserError naming the holder when another process has it."""
        import fcntl  # pylint: disable=import-outside-toplevel  (POSIX only, like the binaries' signals)

        if self._file is not None:
            return self
        make_dirs(self.path)
        lock = open(self.path / WORKDIR_LOCK, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = " ".join(lock.read(200).split()) or "another process"
            lock.close()
            raise UserError(f"the workdir {self.path} is in use by another run ({holder}); wait for it to finish "
                            "or stop it (it checkpoints on SIGINT/SIGTERM), or choose another folder") from None
        except OSError as err:  # ENOLCK, EOPNOTSUPP: no locks on this file system
            lock.close()
            print(f"warning: cannot lock {self.path / WORKDIR_LOCK} ({err.strerror or err}); make sure no other "
                  "run writes to this folder", file=sys.stderr, flush=True)
            return self
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        lock.flush()
        self._file = lock
        return self

    def release(self):
        """Lets another run in; the file stays (removing it could race with a process that opened it)."""
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
