"""Attention blocks a decoder is built from: multi-scale deformable attention (Deformable DETR) and
the sinusoidal position encodings of DETR-style models."""

from lvas.models.transformers import deformable, position  # noqa: F401
