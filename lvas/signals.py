"""SIGTERM handled like Ctrl-C: a plain ``kill``, ``timeout`` or a scheduler's preemption (SLURM sends
SIGTERM first) stops a training at the next Python instruction, ends its MLflow run KILLED with the
reason, stops the workers a sweep started, and exits with one line (status 143; 130 for Ctrl-C).
Checkpoints and reports are written atomically, so stopping anywhere loses nothing already recorded."""

from __future__ import annotations

import signal
import sys


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (a KeyboardInterrupt, so every ``except KeyboardInterrupt`` path handles it)."""

    exit_code = 143


def terminate_like_interrupt() -> None:
    """Make SIGTERM raise :class:`Terminated` (and SIGINT KeyboardInterrupt) in the main thread; after
    the first of either, both are ignored so that the cleanup they start runs to its end. Call once
    per process, from its main thread."""

    def handler(signum, frame):
        global _RECEIVED
        _RECEIVED = signum
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise _exception(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    default = sys.unraisablehook

    def unraisable(info):  # the signal's exception swallowed in a __del__ / weakref callback: check() raises it
        if not (isinstance(info.exc_value, KeyboardInterrupt) and _RECEIVED is not None):
            default(info)

    sys.unraisablehook = unraisable


_RECEIVED: int | None = None


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()


def check() -> None:
    """Raise again a signal whose exception was swallowed: Python ignores an exception raised while a
    ``__del__`` or a weakref callback runs (it prints "Exception ignored in ..."), so a signal that lands
    there would be lost. Long loops call this at their safe points (every batch)."""
    global _RECEIVED
    if _RECEIVED is not None:
        signum, _RECEIVED = _RECEIVED, None
        raise _exception(signum)


def reason(exc: BaseException) -> str:
    """What ended a run, for its ``lvas.end_reason`` tag."""
    if isinstance(exc, Terminated):
        return "terminated (SIGTERM: kill, timeout or a scheduler's preemption); rerun the same command to resume"
    return "interrupted (Ctrl-C); rerun the same command to resume"


# --------------------------------------------------------------------------- child processes


def python_command(*args: str) -> list[str]:
    """``python -P ARGS``: a child Python (sweep worker, torchrun) that never puts the working directory
    on ``sys.path`` ahead of installed packages, so a ``./mlflow.py`` there is never imported (``-P``,
    Python 3.11; ``child_env`` makes the processes it starts in turn do the same)."""
    return [sys.executable, "-P", *args]


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: ``PYTHONSAFEPATH=1`` (the same as ``-P`` for every Python it
    starts: torchrun's ranks, submitit's job), plus ``env``."""
    import os

    return {**os.environ, **(env or {}), "PYTHONSAFEPATH": "1"}
