"""Training loss: weighted binary cross-entropy (``pos_weight``) on the multi-scale outputs
(the official CSTM code's default; the paper's supplement with the loss is not public)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def segmentation_loss(outputs: dict, target: torch.Tensor, pos_weight: float = 1.5,
                      aux_weight: float = 0.5) -> torch.Tensor:
    """BCE on the full-resolution logits plus ``aux_weight`` x the mean BCE of the auxiliary heads.

    Args:
        outputs: model outputs: ``logits`` (B, 1, S, S), ``aux`` list of (B, 1, h, w).
        target: (B, 1, S, S) float in {0, 1}; downsampled by area averaging for the aux heads.
    """
    pw = torch.tensor(pos_weight, device=target.device, dtype=torch.float32)
    loss = F.binary_cross_entropy_with_logits(outputs["logits"].float(), target, pos_weight=pw)
    aux = outputs.get("aux") or []
    if aux and aux_weight > 0:
        extra = [F.binary_cross_entropy_with_logits(a.float(), F.adaptive_avg_pool2d(target, a.shape[-2:]),
                                                    pos_weight=pw) for a in aux]
        loss = loss + aux_weight * torch.stack(extra).mean()
    return loss
