"""Kept for imports from inside the data layer; the class lives in :mod:`lvas.errors` so that the
command line can name it without importing the data layer (and torch)."""

from lvas.errors import DataError  # noqa: F401
