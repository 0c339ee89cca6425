"""What every sub-command shares: one-line argument errors, argument types, --quiet, --version."""

from __future__ import annotations

import argparse
import re
import sys

from lvas.config import DEVICE_NAMES


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``lvas train: error: argument --x: ...; see lvas train --help``)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def at_least(lo: int, hi: int = 2**62):
    """argparse type: an integer from ``lo`` to ``hi``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"{value} is too small; expected an integer >= {lo}")
        if value > hi:
            raise argparse.ArgumentTypeError(f"{str(value)[:40]} is too large; expected at most {hi}")
        return value
    parse.__name__ = f"integer >= {lo}"
    return parse


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is not a finite number > 0")
    return value


def device_name(text: str) -> str:
    """argparse type: auto, cpu, mps, cuda or cuda:N (as ``train.device``)."""
    if not re.fullmatch(DEVICE_NAMES, text):
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: expected auto, cpu, mps, cuda or cuda:N")
    return text


def version_text() -> str:
    """``lvas X (torch Y, torchvision Z, mlflow W, optuna V)``, read from the installed metadata (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    from lvas import __version__

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "not installed"

    return f"lvas {__version__} (" + ", ".join(f"{p} {v(p)}" for p in ("torch", "torchvision", "mlflow", "optuna")) + ")"


def quiet_libraries() -> None:
    """--quiet: MLflow's, Alembic's and Optuna's INFO lines and every progress bar off (warnings and
    errors stay)."""
    import logging
    import os

    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ["TQDM_DISABLE"] = "1"  # tqdm >= 4.66 reads it: bars lvas does not draw itself stay off too
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # "Downloading artifacts"
