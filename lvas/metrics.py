"""Segmentation metrics under a named protocol (shared DESIGN §5).

Per sample IoU = |P ∩ G| / |P ∪ G| (1 when both are empty); overall IoU = ΣI / ΣU; mean IoU =
mean of per-sample IoU; P@X = fraction of samples with IoU >= X; AP = mean of P@t for
t = 0.50, 0.55, ..., 0.95 (the CSTM/ACGA/LBDT definition, not COCO AP). Reported in percent.

Protocols (how a prediction on the padded S x S input becomes a mask at the original size):

* ``paper`` (the CSTM/ACGA code): sigmoid at S x S thresholded at 0.5 x its own maximum, the
  binary mask resized to the original frame; the ground truth makes the same round trip
  (bilinear to the input grid, > 0, back to the original size);
* ``strict``: logits resized (bilinear) to the original size, sigmoid > 0.5, against the
  native-resolution ground truth.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lvas.data.clips import Letterbox

PROTOCOLS = ("paper", "strict")
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
AP_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))
METRIC_NAMES = tuple(f"P@{t}" for t in THRESHOLDS) + ("AP", "oIoU", "mIoU")


def _nearest(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0] > 0.5


def masks_for_protocol(logits: torch.Tensor, gt: torch.Tensor, lb: Letterbox, protocol: str
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction and ground truth, both (H, W) bool at the original size, under ``protocol``.

    Args:
        logits: (S, S) mask logits on the padded input.
        gt: (H, W) bool ground truth at the original size.
        lb: the letterbox that placed the frame in the input.
    """
    h, w = lb.resized
    if protocol == "paper":
        prob = torch.sigmoid(logits.float())
        pred_in = prob > 0.5 * prob.max()
        pred = _nearest(pred_in[:h, :w], lb.orig)
        # the CSTM code's round trip: plain bilinear (no antialiasing) to the input grid, > 0, back
        gt_in = F.interpolate(gt[None, None].float(), size=lb.resized, mode="bilinear", align_corners=False)[0, 0] > 0
        gt_rt = _nearest(gt_in, lb.orig)
        return pred, gt_rt
    if protocol == "strict":
        up = F.interpolate(logits[None, None, :h, :w].float(), size=lb.orig, mode="bilinear", align_corners=False)
        return up[0, 0] > 0, gt.bool()  # sigmoid(x) > 0.5  <=>  x > 0
    raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")


def intersection_union(pred: torch.Tensor, gt: torch.Tensor) -> tuple[int, int]:
    return int((pred & gt).sum()), int((pred | gt).sum())


@dataclass
class MetricAccumulator:
    """Collects per-sample intersections and unions, overall and by group (query kind)."""

    inter: list[int] = field(default_factory=list)
    union: list[int] = field(default_factory=list)
    groups: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def add(self, inter: int, union: int, group: str = "") -> None:
        if group:
            self.groups[group].append(len(self.inter))
        self.inter.append(inter)
        self.union.append(union)

    def __len__(self) -> int:
        return len(self.inter)

    @staticmethod
    def _compute(inter: np.ndarray, union: np.ndarray) -> dict[str, float]:
        if len(inter) == 0:
            return {k: float("nan") for k in METRIC_NAMES}
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        out = {f"P@{t}": 100.0 * float((iou >= t - 1e-9).mean()) for t in THRESHOLDS}
        out["AP"] = 100.0 * float(np.mean([(iou >= t - 1e-9).mean() for t in AP_THRESHOLDS]))
        out["oIoU"] = 100.0 * float(inter.sum() / union.sum()) if union.sum() > 0 else 100.0
        out["mIoU"] = 100.0 * float(iou.mean())
        return out

    def compute(self) -> dict[str, float]:
        """Overall metrics, plus ``<group>/<metric>`` for each group and ``n`` / ``<group>/n``."""
        inter, union = np.asarray(self.inter, dtype=np.float64), np.asarray(self.union, dtype=np.float64)
        out = self._compute(inter, union)
        out["n"] = len(inter)
        for g, idx in sorted(self.groups.items()):
            for k, v in self._compute(inter[idx], union[idx]).items():
                out[f"{g}/{k}"] = v
            out[f"{g}/n"] = len(idx)
        return out
