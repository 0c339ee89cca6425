"""A test that needs a tool from outside Python (SLURM, TeX, Chromium, a tmpfs mount, pycocotools):
where it is missing the test skips and says what to install -- except under ``.ci/run``, which
installs every one of them and sets ``LVAS_REQUIRE_TOOLS=1``, so a missing tool there fails the test
instead of hiding it."""

from __future__ import annotations

import os

import pytest


def missing(reason: str) -> None:
    """Skip (or, where the tools must be present, fail) with ``reason``."""
    if os.environ.get("LVAS_REQUIRE_TOOLS") == "1":
        pytest.fail(f"required tool missing (LVAS_REQUIRE_TOOLS=1): {reason}", pytrace=False)
    pytest.skip(reason)


def need_module(name: str, reason: str):
    """Import ``name``, or :func:`missing` with ``reason``."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        missing(reason)
