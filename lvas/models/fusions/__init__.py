"""Spatial-temporal fusions of one decoder stage (``model.fusion``)."""

from lvas.models.fusions import cstm, bca  # noqa: F401
