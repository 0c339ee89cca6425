"""ReferFormer's criterion (Wu et al., CVPR 2022, §3.5): video-level matching, then focal + box + mask
losses on the matched query, at every decoder layer.

A clip's referred object is one target across its T frames (MeViS's several objects are one target
too: the union of their masks). For each clip, the query q* minimising

    C(q) = c_cls * mean_{t valid} [FL+(p_tq) - FL-(p_tq)] + c_L1 * mean_t |b_tq - b_t|_1
           - c_giou * mean_t GIoU(b_tq, b_t) + c_mask * mean_{t,x} FL(m_tq(x), g_t(x)) - c_dice * Dice(m_q, g)

is matched (Hungarian assignment, scipy: with one target, the best query), where FL+ / FL- are the
focal costs of calling a query the object / not (alpha 0.25, gamma 2), b boxes (cx cy w h), m mask
logits at stride 4 and g the ground truth sampled at stride 4 (offset 2). With N the number of
valid (object-visible) frames of the batch:

    L_cls  = sum focal(p, y) / N * (T Q)        y = 1 for the matched query in valid frames
    L_L1   = sum_t |b_tq* - b_t|_1 / N,   L_giou = sum_t (1 - GIoU(b_tq*, b_t)) / N
    L_mask = sum focal(m_q*, g) (mean over T H W) / N,   L_dice = sum (1 - Dice(m_q*, g)) / N

    L = w_cls L_cls + w_L1 L_L1 + w_giou L_giou + w_mask L_mask + w_dice L_dice, summed over layers

with the release's weights (opts.py): costs class 2, L1 5, GIoU 2, mask 2, dice 5; losses cls 2, L1 5,
GIoU 2, mask 2, dice 5. Boxes of the ground truth come from its mask on the input grid: (x1, y1,
x2, y2) the extreme pixel indices, as the release's ``bounding_box``, normalised by the input size; a
frame where the object is not visible has the box (0, 0, 0, 0), as in the release.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from lvas.registry import LOSSES
from lvas.settings import NonNegativeFloat

STRIDE = 4  # the mask head's output stride


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) masks -> (N, 4) boxes (cx, cy, w, h) normalised by W, H; (0, 0, 0, 0) for an empty mask."""
    n, h, w = masks.shape
    out = torch.zeros(n, 4, dtype=torch.float32 if masks.dtype != torch.float64 else masks.dtype, device=masks.device)
    for i in range(n):
        ys, xs = torch.nonzero(masks[i] > 0.5, as_tuple=True)
        if ys.numel():
            x1, x2, y1, y2 = xs.min(), xs.max(), ys.min(), ys.max()
            out[i] = torch.stack([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]).to(out.dtype)
    return out


def _focal_cost(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """(Q, P) logits against (P,) targets -> (Q,) mean focal cost (the release's ``sigmoid_focal_coef``)."""
    from torchvision.ops import sigmoid_focal_loss  # here: importing torchvision costs ~1.2 s of CPU per process

    return sigmoid_focal_loss(logits, target.expand_as(logits), alpha=alpha, gamma=gamma, reduction="none").mean(1)


def _dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(Q, P) logits against (Q or 1, P) targets -> (Q,) Dice coefficient with +1 smoothing."""
    p = logits.sigmoid()
    return (2 * (p * target).sum(-1) + 1) / (p.sum(-1) + target.sum(-1) + 1)


def match(out: dict, gt: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, costs: dict[str, float]) -> torch.Tensor:
    """The matched query of every clip.

    Args:
        out: ``pred_logits`` (B, T, Q, 1), ``pred_boxes`` (B, T, Q, 4), ``pred_masks`` (B, T, Q, h, w).
        gt: (B, T, h, w) ground truth at stride 4; boxes (B, T, 4); valid (B, T) bool.

    Returns:
        (B,) query indices.
    """
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import box_convert, generalized_box_iou

    b, t, q = out["pred_logits"].shape[:3]
    chosen = []
    with torch.no_grad():
        for i in range(b):
            prob = out["pred_logits"][i, ..., 0].sigmoid()  # (T, Q)
            alpha, gamma = 0.25, 2.0
            neg = (1 - alpha) * prob ** gamma * -(1 - prob + 1e-8).log()
            pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
            v = valid[i]
            cls = (pos - neg)[v].mean(0) if v.any() else torch.zeros(q, dtype=prob.dtype, device=prob.device)
            pb = out["pred_boxes"][i]  # (T, Q, 4)
            l1 = torch.stack([torch.cdist(pb[k], boxes[i, k][None], p=1)[:, 0] for k in range(t)]).mean(0)
            giou = torch.stack([-generalized_box_iou(box_convert(pb[k], "cxcywh", "xyxy"),
                                                     box_convert(boxes[i, k][None], "cxcywh", "xyxy"))[:, 0]
                                for k in range(t)]).mean(0)
            m = out["pred_masks"][i].transpose(0, 1).flatten(1)  # (Q, T h w)
            g = gt[i].flatten()[None].to(m.dtype)
            cost = (costs["class"] * cls + costs["bbox"] * l1 + costs["giou"] * giou
                    + costs["mask"] * _focal_cost(m, g) - costs["dice"] * _dice(m, g))
            # (a degenerate box pair -- both of zero area -- gives GIoU 0/0: never the match)
            cost = torch.nan_to_num(cost.double(), nan=1e8)
            rows, _ = linear_sum_assignment(cost[:, None].detach().cpu().numpy())
            chosen.append(int(rows[0]))
    return torch.tensor(chosen, device=out["pred_logits"].device)


def layer_losses(out: dict, gt: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, idx: torch.Tensor,
                 num: float, alpha: float) -> dict[str, torch.Tensor]:
    """The five losses of one decoder layer's outputs for the matched queries ``idx`` (B,)."""
    from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

    logits = out["pred_logits"]  # (B, T, Q, 1)
    b, t, q = logits.shape[:3]
    ar = torch.arange(b, device=logits.device)
    target = torch.zeros_like(logits)
    target[ar, :, idx, 0] = valid.to(logits.dtype)
    flat = logits.reshape(b, t * q, 1)
    loss_ce = sigmoid_focal_loss(flat, target.reshape(b, t * q, 1), alpha=alpha, gamma=2.0,
                                 reduction="none").mean(1).sum() / num * (t * q)
    pb = out["pred_boxes"][ar, :, idx].reshape(b * t, 4)  # (B*T, 4), clip-major
    tb = boxes.reshape(b * t, 4).to(pb.dtype)
    loss_bbox = F.l1_loss(pb, tb, reduction="none").sum() / num
    giou = torch.diag(generalized_box_iou(box_convert(pb, "cxcywh", "xyxy"), box_convert(tb, "cxcywh", "xyxy")))
    loss_giou = (1 - giou).sum() / num
    m = out["pred_masks"][ar, :, idx].flatten(1)  # (B, T h w)
    g = gt.flatten(1).to(m.dtype)
    loss_mask = sigmoid_focal_loss(m, g, alpha=alpha, gamma=2.0, reduction="none").mean(1).sum() / num
    loss_dice = (1 - _dice(m, g)).sum() / num
    return {"class": loss_ce, "bbox": loss_bbox, "giou": loss_giou, "mask": loss_mask, "dice": loss_dice}


def referformer_loss(*, cost_class: NonNegativeFloat = 2.0, cost_bbox: NonNegativeFloat = 5.0,
                     cost_giou: NonNegativeFloat = 2.0, cost_mask: NonNegativeFloat = 2.0,
                     cost_dice: NonNegativeFloat = 5.0, class_weight: NonNegativeFloat = 2.0,
                     bbox_weight: NonNegativeFloat = 5.0, giou_weight: NonNegativeFloat = 2.0,
                     mask_weight: NonNegativeFloat = 2.0, dice_weight: NonNegativeFloat = 5.0,
                     focal_alpha: NonNegativeFloat = 0.25, aux: bool = True) -> Callable:
    """ReferFormer's criterion: video-level matching; focal, L1 + GIoU box, focal + Dice mask; every layer."""
    costs = {"class": cost_class, "bbox": cost_bbox, "giou": cost_giou, "mask": cost_mask, "dice": cost_dice}
    weights = {"class": class_weight, "bbox": bbox_weight, "giou": giou_weight, "mask": mask_weight,
               "dice": dice_weight}

    def loss(outputs: dict, targets: dict) -> torch.Tensor:
        """outputs: the ``referformer`` decoder's; targets: ``masks`` (B, T, H, W) on the input grid and
        ``annotated`` (B, T) bool, for the predicted frames (lvas.engine.inference.clip_targets)."""
        if "pred_logits" not in outputs:
            raise ValueError("train.loss: referformer matches queries to the object; model.decoder gives one mask per "
                             "frame, not queries (use model.decoder: referformer, or another train.loss)")
        masks, annotated = targets["masks"], targets["annotated"]
        b, t, h, w = masks.shape
        if h % STRIDE or w % STRIDE:
            raise ValueError(f"loss referformer: the input ({h} x {w}) must be a multiple of {STRIDE} (data.size)")
        shapes_only = masks.device.type == "meta"  # (lvas's meta-device tests: no data to match on)
        boxes = (torch.zeros(b, t, 4, dtype=masks.dtype, device=masks.device) if shapes_only
                 else mask_boxes(masks.flatten(0, 1)).view(b, t, 4).to(masks.device))
        valid = annotated & (masks.flatten(2) > 0.5).any(-1)
        gt = masks[:, :, STRIDE // 2::STRIDE, STRIDE // 2::STRIDE]
        num = 1.0 if shapes_only else max(float(valid.sum()), 1.0)
        total = 0.0
        layers = [outputs, *(outputs.get("aux_outputs") or [] if aux else [])]
        for out in layers:
            idx = (torch.zeros(b, dtype=torch.long, device=masks.device) if shapes_only
                   else match(out, gt, boxes, valid, costs))
            parts = layer_losses(out, gt, boxes, valid, idx, num, focal_alpha)
            total = total + sum(weights[k] * v for k, v in parts.items())
        return total

    loss.per_clip = True  # it takes every predicted frame of a clip at once (lvas.engine.inference.clip_targets)
    return loss


referformer_loss.needs = "queries"  # a decoder that gives per-query outputs (model.decoder: referformer)
LOSSES.register("referformer")(referformer_loss)
