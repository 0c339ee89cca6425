"""Prediction heads: dynamic (conditional) mask convolutions and ReferFormer's cross-modal FPN."""

from lvas.models.heads import cross_modal_fpn, dynamic_mask  # noqa: F401
