"""Who is alive: process identity, heartbeats, file locks and the temporary files of killed writes.

One rule everywhere (training runs in MLflow, sweep trials in Optuna):

* a process is named by (host, pid, start time); the start time guards against a reused pid;
* on the **same host** a process is dead exactly when that (pid, start time) no longer exists —
  however old its heartbeat (a slow epoch is not death);
* on **another host** nothing can be asked, so it is dead when its heartbeat, written from a
  background thread every few seconds, is older than a threshold.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

HOST = socket.gethostname()


def process_start(pid: int | None = None) -> float | None:
    """Start time (seconds since the epoch, as psutil gives it) of ``pid``; None if it does not exist."""
    import psutil

    try:
        return round(psutil.Process(pid or os.getpid()).create_time(), 2)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return -1.0  # exists, owned by someone else


def identity() -> dict[str, str]:
    """This process as plain strings: host, pid, start time."""
    return {"host": HOST, "pid": str(os.getpid()), "start": str(process_start())}


def is_dead(host: str | None, pid, start=None, heartbeat: float | None = None, stale_after: float = 600.0,
            now: float | None = None) -> bool:
    """Whether the process (host, pid, start) is gone; see the module docstring for the rule."""
    if host == HOST and pid not in (None, ""):
        found = process_start(int(pid))
        if found is None:
            return True
        if start in (None, "", "None") or found == -1.0:
            return False
        return abs(found - float(start)) > 1.0  # the pid was reused by another process
    if heartbeat in (None, ""):
        return False  # nothing to go on: never take over a run we cannot judge
    return (now or time.time()) - float(heartbeat) > stale_after


class Heartbeat:
    """Call ``beat()`` every ``interval`` seconds from a daemon thread until stopped (a context manager).

    A beat that raises is ignored (the next one tries again): a slow or locked store must never stop
    the work it watches.
    """

    def __init__(self, beat: Callable[[], None], interval: float) -> None:
        self.beat, self.interval = beat, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lvas-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.beat()

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        self._thread.join(timeout=self.interval + 30)
        return False


# --------------------------------------------------------------------------- locks


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl) on ``path``, waited for, held for the block."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Busy(RuntimeError):
    """Another live process holds the lock; ``owner`` says which (as written in the lock file)."""

    def __init__(self, path: Path, owner: str) -> None:
        super().__init__(f"{path} is held by {owner or 'another process'}")
        self.path, self.owner = path, owner


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold ``path`` exclusively or raise :class:`Busy` at once. The lock dies with its process
    (fcntl), so a killed holder never leaves it taken; the file names the holder for messages."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=True)
    # the lock is held on a read-only descriptor: no file stays open for writing while the work runs
    # (a folder whose file system turns read-only must be able to, and its writers must fail cleanly)
    fh = open(path)
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(path, fh.read().strip()) from None
        path.write_text(f"pid {os.getpid()} on {HOST}")
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


# --------------------------------------------------------------------------- temporary files


def tmp_path(path: str | Path) -> Path:
    """Where to write ``path`` before renaming it into place: ``.<name>.lvas-tmp-<host>-<pid>``."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARK}{HOST}-{os.getpid()}")


TMP_MARK = ".lvas-tmp-"
_TMP_NAME = re.compile(r"\..+" + re.escape(TMP_MARK) + r"(?P<host>[^/]+)-(?P<pid>\d+)")


def clean_tmp(folder: str | Path, older_than: float = 86400.0) -> list[Path]:
    """Remove the temporary files of lvas's own writes killed half-way under ``folder``
    (recursively): files named exactly as :func:`tmp_path` names them (``.<name>.lvas-tmp-<host>-<pid>``)
    whose process on this host is gone, or older than ``older_than`` seconds (another host's).
    Nothing else is touched: a user's ``.x.tmp-1`` is not lvas's. Returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.rglob(f".*{TMP_MARK}*"):
        m = _TMP_NAME.fullmatch(p.name)
        if m is None or p.is_symlink():
            continue
        try:
            gone = m["host"] == HOST and process_start(int(m["pid"])) is None
            old = m["host"] != HOST and time.time() - p.stat().st_mtime > older_than
            if p.is_file() and (gone or old):
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


def replace_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary file, then rename it to ``path``: a kill never leaves half a file.

    A write that fails (a full disk, a read-only folder, a signal) leaves no temporary behind and
    the file at ``path`` as it was; a failure to write is raised as an OSError naming ``path`` (torch's
    writer reports a full disk as a RuntimeError)."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        code = _write_errno(e, path) if isinstance(e, RuntimeError) else None
        if code is not None:  # torch's zip writer: "file write failed", "unexpected pos ...", "open file failed"
            raise OSError(code, os.strerror(code), str(path)) from None
        raise
    return path


def _write_errno(e: RuntimeError, path: Path) -> int | None:
    """The errno behind a RuntimeError from torch's file writer, or None when it is not a write failure."""
    import errno
    import shutil

    text = str(e)
    for code in (errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EDQUOT):
        if os.strerror(code) in text:
            return code
    try:
        if shutil.disk_usage(path.parent).free < 16 * 2**20:
            return errno.ENOSPC
    except OSError:
        pass
    return errno.EIO if "writ" in text.lower() or "open file failed" in text else None


def write_atomic(path: str | Path, text: str) -> Path:
    """:func:`replace_atomic` of a text file."""
    return replace_atomic(path, lambda tmp: tmp.write_text(text))


def check_replaceable(path: str | Path, is_ours: Callable[[Path], bool], force: bool, option: str) -> None:
    """Refuse to replace an existing ``path`` unless it is a file of the kind this command writes
    (``is_ours``) or the user said ``--force``; a symbolic link is never followed (the new file would
    replace the link, not what it points to) and is replaced only with ``--force``. Raises
    FileExistsError with one line naming ``option`` and the file."""
    path = Path(path)
    if force or not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink():
        raise FileExistsError(f"{option} {path}: is a symbolic link (to {os.readlink(path)}); lvas never writes "
                              f"through one: give another file name, or --force to replace the link itself")
    if path.is_dir():
        raise FileExistsError(f"{option} {path}: is a folder; give a file name")
    ours = False
    with contextlib.suppress(Exception):
        ours = is_ours(path)
    if not ours:
        raise FileExistsError(f"{option} {path}: exists and is not a file this command wrote; give another file "
                              f"name, or --force to replace it")
