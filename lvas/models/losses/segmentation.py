"""Training losses, one registered entry per method (``train.loss``; ``lvas list loss``).

* ``cstm`` — weighted binary cross-entropy (``pos_weight``) on the full-resolution logits plus
  ``aux_weight`` x the mean BCE of the auxiliary heads (the official CSTM code's default; the
  paper's supplement with the loss is not public).
* ``acga`` — the weighted BCE of the fused head plus ``aux_weight`` x the sum over the other heads,
  each at its own resolution (ACGA ``main.py``: ``loss_res1 + loss_res2 + loss_res3``, i.e.
  ``aux_weight: 1.0``, ``pos_weight`` 1.5).
* ``lbdt`` — 0.5 x weighted BCE + 0.5 x Dice on the full-resolution logits (LBDT ``train.py``;
  Dice ``1 - (2 sum(p g) + 1) / (sum p + sum g + 1)`` per sample, averaged, with p = sigmoid clamped
  to [1e-4, 1 - 1e-4] as the release's ``_sigmoid`` does -- so a pixel beyond the clamp gives Dice
  no gradient).

Auxiliary targets are the mask area-averaged to the head's grid (a soft target).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from lvas.registry import LOSSES
from lvas.settings import NonNegativeFloat, PositiveFloat

Loss = Callable[[dict, torch.Tensor], torch.Tensor]
LBDT_DICE_CLAMP = 1e-4  # LBDT train.py: _sigmoid = clamp(sigmoid(x), 1e-4, 1 - 1e-4)


def full(x: torch.Tensor) -> torch.Tensor:
    """A loss's working precision: float32 (bf16 logits under autocast are widened), float64 kept."""
    return x if x.dtype == torch.float64 else x.float()


def _bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float) -> torch.Tensor:
    logits = full(logits)
    target = target.to(logits.dtype)
    if logits.shape[-2:] != target.shape[-2:]:
        target = F.adaptive_avg_pool2d(target, logits.shape[-2:])
    pw = torch.tensor(pos_weight, device=target.device, dtype=logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, clamp: float = 0.0) -> torch.Tensor:
    """1 - (2 sum(p g) + 1) / (sum p + sum g + 1) per sample, averaged; p = sigmoid(logits), clamped
    to [clamp, 1 - clamp] (``torch.clamp``: no gradient where it clamps) when ``clamp`` > 0."""
    p = torch.sigmoid(full(logits))
    if clamp:
        p = p.clamp(min=clamp, max=1 - clamp)
    p = p.flatten(1)
    g = target.flatten(1).to(p.dtype)
    return (1 - (2 * (p * g).sum(1) + 1) / (p.sum(1) + g.sum(1) + 1)).mean()


@LOSSES.register("cstm")
def cstm_loss(*, pos_weight: PositiveFloat = 1.5, aux_weight: NonNegativeFloat = 0.5) -> Loss:
    """Weighted BCE on the logits + aux_weight x mean weighted BCE of the auxiliary heads (CSTM)."""

    def loss(outputs: dict, target: torch.Tensor) -> torch.Tensor:
        """outputs: ``logits`` (B, 1, S, S), ``aux`` list of (B, 1, h, w); target (B, 1, S, S) in {0, 1}."""
        total = _bce(outputs["logits"], target, pos_weight)
        aux = outputs.get("aux") or []
        if aux and aux_weight > 0:
            total = total + aux_weight * torch.stack([_bce(a, target, pos_weight) for a in aux]).mean()
        return total

    return loss


@LOSSES.register("acga")
def acga_loss(*, pos_weight: PositiveFloat = 1.5, aux_weight: NonNegativeFloat = 1.0) -> Loss:
    """Weighted BCE of the logits + aux_weight x the sum over the other heads (ACGA: all weight 1)."""

    def loss(outputs: dict, target: torch.Tensor) -> torch.Tensor:
        total = _bce(outputs["logits"], target, pos_weight)
        for a in outputs.get("aux") or []:
            total = total + aux_weight * _bce(a, target, pos_weight)
        return total

    return loss


@LOSSES.register("lbdt")
def lbdt_loss(*, pos_weight: PositiveFloat = 1.5) -> Loss:
    """0.5 x weighted BCE + 0.5 x Dice on the full-resolution logits (LBDT; auxiliary heads unused)."""

    def loss(outputs: dict, target: torch.Tensor) -> torch.Tensor:
        logits = outputs["logits"]
        return 0.5 * _bce(logits, target, pos_weight) + 0.5 * dice_loss(logits, target, clamp=LBDT_DICE_CLAMP)

    return loss


def build_loss(cfg) -> Loss:
    """The loss ``train.loss`` names, with its own settings."""
    loss = cfg.train.loss
    return LOSSES.build(loss.name, loss.settings())
