"""Segmentation metrics under a named protocol (shared DESIGN §5).

Per sample IoU = |P ∩ G| / |P ∪ G|; overall IoU = ΣI / ΣU; mean IoU = mean of per-sample IoU;
P@X = fraction of samples with IoU >= X (X = 0.5..0.9); AP = mean of P@t for t = 0.50, 0.55,
..., 0.95 (the CSTM/ACGA/LBDT definition, not COCO AP). Reported in percent.

Protocols (registered in ``PROTOCOLS``; how a prediction on the S x S input becomes a mask at the original size):

* ``paper`` — the released CSTM evaluation (``utils/tool.py``), step for step: frames stretched
  to S x S (input pipeline ``stretch`` or ``released``); ``sigmoid(logits) * 255`` thresholded at
  0.5 x its per-sample maximum; the uint8 0/1 mask resized to the original size with OpenCV's
  bilinear ``cv2.resize``; the ground truth resized to S x S with bilinear ``align_corners=True``,
  every value > 0 set to 1, and resized back with ``cv2.resize`` too; per-sample IoU
  ``(I + 1e-6) / (U + 1e-6)`` (so two empty masks score 1) and P@t with ``>=``. The release's
  loader also drops the last incomplete batch (``drop_last=True``: 2 of A2D's 3,794 test samples
  with batch 8); lvas scores every sample.
* ``lbdt`` — the released LBDT evaluation: sigmoid > 0.5 on the S x S input (a fixed threshold,
  not CSTM's 0.5 x maximum); the ground truth resized to S x S (bilinear, align_corners) and
  binarised (> 0); both masks nearest-upsampled to the original size; IoU smoothed by 1e-6.
* ``strict``: logits resized (bilinear) to the original size, sigmoid > 0.5, against the
  native-resolution ground truth; IoU of two empty masks is 1.
* ``coco`` / ``coco_top1`` — COCO mask AP (``mAP``) as MTTR, ReferFormer, SgMg and ReferDINO report
  it on A2D / J-HMDB, with their P@k, overall and mean IoU (lvas/coco.py).
"""

from __future__ import annotations

import functools
import math
import typing
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lvas import catalogue
from lvas.registry import EVALUATORS, PROTOCOLS

THRESHOLDS = catalogue.THRESHOLDS
AP_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))
METRIC_NAMES = catalogue.SEGMENTATION
VIDEO_METRIC_NAMES = catalogue.VIDEO  # Ref-YouTube-VOS: per-expression DAVIS J, F and J&F (VideoJF)


def cv2_resize(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenCV's bilinear resize of a uint8 mask to (H, W), as the released evaluation does.

    OpenCV's fixed-point uint8 arithmetic rounds differently from every float resampler (Pillow,
    torch, scikit-image), so lvas depends on ``opencv-python-headless`` for this one call.
    """
    import cv2

    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def released_masks(logits: torch.Tensor, gt: torch.Tensor, orig: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and ground truth of the released evaluation, both (H, W) bool.

    Args:
        logits: (S, S) mask logits on the stretched input.
        gt: (H, W) bool ground truth at the original size.
        orig: (H, W) of the original frame.
    """
    res = torch.sigmoid(logits.float()).numpy() * 255.0
    pred = cv2_resize((res > np.amax(res) * 0.5).astype(np.uint8), orig)
    g = F.interpolate(gt[None, None].float(), size=tuple(logits.shape[-2:]), mode="bilinear", align_corners=True)[0, 0]
    gt_rt = cv2_resize((g > 0).numpy().astype(np.uint8), orig)
    return pred.astype(bool), gt_rt == 1


class Geometry(typing.Protocol):
    """Where a frame sits in the S x S input (``lvas.data.clips.Letterbox``): its original (H, W)
    ``orig`` and the (h, w) ``resized`` it was scaled to."""

    orig: tuple[int, int]
    resized: tuple[int, int]


@dataclass(frozen=True)
class Protocol:
    """One registered way of scoring: ``masks(logits, gt, lb)`` -> (prediction, ground truth), both
    (H, W) bool at the original size; ``smooth``: per-sample IoU ``(I + s) / (U + s)`` (exact with
    0); ``stretched``: True if it assumes frames stretched to S x S (no letterbox); ``evaluators``:
    which registered evaluator stands in for a dataset's (``{"segmentation": "coco"}``); ``score``:
    ``score(logits, lb)``, the detection score of a mask, for protocols that rank masks."""

    name: str
    masks: Callable[[torch.Tensor, torch.Tensor, Geometry], tuple[torch.Tensor, torch.Tensor]]
    smooth: float
    stretched: bool
    evaluators: dict = field(default_factory=dict)
    score: Callable[[torch.Tensor, Geometry], float] | None = None


def _need_stretch(name: str, logits: torch.Tensor, lb: Geometry) -> None:
    if tuple(lb.resized) != tuple(logits.shape[-2:]):
        raise ValueError(f"protocol {name!r} reproduces a released evaluation, whose frames are stretched to "
                         f"S x S; this input was letterboxed (set model.input: stretch or released)")


def _paper(logits: torch.Tensor, gt: torch.Tensor, lb: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    _need_stretch("paper", logits, lb)
    pred, truth = released_masks(logits, gt, lb.orig)
    return torch.from_numpy(pred), torch.from_numpy(truth)


def _strict(logits: torch.Tensor, gt: torch.Tensor, lb: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = lb.resized
    up = F.interpolate(logits[None, None, :h, :w].float(), size=lb.orig, mode="bilinear", align_corners=False)
    return up[0, 0] > 0, gt.bool()  # sigmoid(x) > 0.5  <=>  x > 0


def _lbdt(logits: torch.Tensor, gt: torch.Tensor, lb: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """LBDT's evaluation (``utils/metrics.py`` and ``ResizeAnnotation``): sigmoid > 0.5 on the S x S
    input; the ground truth resized to S x S (bilinear, align_corners) and every value > 0 set to 1;
    both nearest-upsampled (``F.interpolate``'s default) to the original size."""
    _need_stretch("lbdt", logits, lb)
    pred = (torch.sigmoid(logits.float()) > 0.5).float()
    g = F.interpolate(gt[None, None].float(), size=tuple(logits.shape[-2:]), mode="bilinear", align_corners=True)
    g = (g > 0).float()
    up = lambda m: F.interpolate(m.reshape(1, 1, *m.shape[-2:]), size=lb.orig)[0, 0] > 0.5  # noqa: E731
    return up(pred), up(g)


PROTOCOLS.register("paper", "the released CSTM (and ACGA) evaluation: 0.5 x max threshold, OpenCV round trips")(
    Protocol("paper", _paper, 1e-6, True))
PROTOCOLS.register("strict", "logits resized to the original frame, sigmoid > 0.5, native ground truth")(
    Protocol("strict", _strict, 0.0, False))
PROTOCOLS.register("lbdt", "the released LBDT evaluation: sigmoid > 0.5, ground truth round trip, nearest upsampling")(
    Protocol("lbdt", _lbdt, 1e-6, True))


def get_protocol(name) -> Protocol:
    """The registered protocol ``name`` (or the config's ``train.protocol``; an unknown name raises
    with the choices)."""
    return PROTOCOLS.get(getattr(name, "name", name)).builder


def masks_for_protocol(logits: torch.Tensor, gt: torch.Tensor, lb: Geometry, protocol_name
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction and ground truth, both (H, W) bool at the original size, under ``protocol_name``.

    Args:
        logits: (S, S) mask logits on the input grid.
        gt: (H, W) bool ground truth at the original size.
        lb: the geometry that placed the frame in the input.
    """
    try:
        entry = PROTOCOLS.get(getattr(protocol_name, "name", protocol_name))
    except KeyError as e:
        raise ValueError(str(e)) from None
    return entry.builder.masks(logits, gt, lb)


def sample_iou(inter: np.ndarray, union: np.ndarray, smooth: float) -> tuple[np.ndarray, float]:
    """Per-sample IoU and the tolerance thresholds are compared with: ``(I + smooth) / (U + smooth)``
    compared exactly (the released code), or with ``smooth`` 0 exact IoU (1 for two empty masks)
    compared with a 1e-9 tolerance against float rounding."""
    if smooth:
        return (inter + smooth) / (union + smooth), 0.0
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0), 1e-9


def intersection_union(pred: torch.Tensor, gt: torch.Tensor) -> tuple[int, int]:
    return int((pred & gt).sum()), int((pred | gt).sum())


@dataclass
class MetricAccumulator:
    """Collects per-sample intersections and unions, overall and by group (query kind).

    ``smooth``: per-sample IoU is ``(I + smooth) / (U + smooth)`` (the released code's 1e-6 under
    protocol ``paper``, compared with ``>=`` as it does) or, with 0, exact (1 for two empty masks).
    """

    inter: list[int] = field(default_factory=list)
    union: list[int] = field(default_factory=list)
    groups: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    smooth: float = 0.0

    @classmethod
    def for_protocol(cls, protocol: str) -> "MetricAccumulator":
        return cls(smooth=get_protocol(protocol).smooth)

    def add(self, inter: int, union: int, group: str = "") -> None:
        if group:
            self.groups[group].append(len(self.inter))
        self.inter.append(inter)
        self.union.append(union)

    def __len__(self) -> int:
        return len(self.inter)

    def _compute(self, inter: np.ndarray, union: np.ndarray) -> dict[str, float]:
        if len(inter) == 0:
            return {k: float("nan") for k in METRIC_NAMES}
        iou, tol = sample_iou(inter, union, self.smooth)
        out = {f"P@{t}": 100.0 * float((iou >= t - tol).mean()) for t in THRESHOLDS}
        out["AP"] = 100.0 * float(np.mean([(iou >= t - tol).mean() for t in AP_THRESHOLDS]))
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


# --------------------------------------------------------------------------- video J&F (DAVIS)
# Ref-YouTube-VOS is scored as the DAVIS benchmark scores an object: per frame, region similarity J
# (IoU; two empty masks score 1) and boundary F-measure F (below); per expression (one referred
# object), J and F are their means over its frames; the dataset's J, F are means over expressions and
# J&F = (J + F) / 2.  Written after the DAVIS 2017 evaluation (davis2017/metrics.py) and checked
# against it by ``benchmarks/oracle_davis_jf.py``.

BOUNDARY_TOLERANCE = 0.008  # DAVIS bound_th: a fraction of the image diagonal


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity J of two (H, W) bool masks: |P ∩ G| / |P ∪ G|, 1 when both are empty."""
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> the 1-pixel boundary of DAVIS's ``seg2bmap``: a pixel differs from its east,
    south or south-east neighbour (zero outside the frame); in the last row only the east
    neighbour counts, in the last column only the south one; the bottom-right pixel is never one."""
    m = mask.astype(bool)
    e, s, se = np.zeros_like(m), np.zeros_like(m), np.zeros_like(m)
    e[:, :-1], s[:-1, :], se[:-1, :-1] = m[:, 1:], m[1:, :], m[1:, 1:]
    b = (m ^ e) | (m ^ s) | (m ^ se)
    b[-1, :] = m[-1, :] ^ e[-1, :]
    b[:, -1] = m[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


@functools.lru_cache(maxsize=8)
def _disk(radius: int) -> np.ndarray:
    """Disk structuring element (uint8, as cv2 takes it) of ``radius``: offsets with dy² + dx² <= radius²."""
    r = np.arange(-radius, radius + 1)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2).astype(np.uint8)


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """DAVIS boundary F-measure of two (H, W) bool masks.

    Boundaries (:func:`boundary_map`) match within ``ceil(tolerance * diagonal)`` pixels (a disk
    dilation; ``tolerance >= 1`` is a pixel count). Precision: matched prediction boundary /
    prediction boundary; recall: matched ground-truth boundary / ground-truth boundary. With no
    boundary in one mask: (1, 0) if only the prediction's is empty, (0, 1) if only the ground
    truth's, (1, 1) if both; F = 2PR / (P + R), 0 when P + R = 0.
    """
    import cv2  # OpenCV's dilation (as the DAVIS code): 17x faster than scipy's at 720p

    radius = int(tolerance if tolerance >= 1 else math.ceil(tolerance * math.hypot(*pred.shape)))
    pb, gb = boundary_map(pred), boundary_map(gt)
    n_p, n_g = int(pb.sum()), int(gb.sum())
    if n_p == 0 or n_g == 0:
        precision, recall = (1.0 if n_p == 0 else 0.0), (1.0 if n_g == 0 else 0.0)
    else:
        disk = _disk(radius)
        precision = float((pb & (cv2.dilate(gb.astype(np.uint8), disk) > 0)).sum() / n_p)
        recall = float((gb & (cv2.dilate(pb.astype(np.uint8), disk) > 0)).sum() / n_g)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@dataclass
class VideoJF:
    """Per-frame J and F grouped by expression (``video/expression``); :meth:`compute` gives the
    dataset's ``J``, ``F``, ``J&F`` in percent and ``expressions`` (their count)."""

    frames: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, expression: str, pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
        j, f = region_j(pred, gt), boundary_f(pred, gt)
        self.frames[expression].append((j, f))
        return j, f

    def per_expression(self) -> dict[str, tuple[float, float]]:
        """expression -> (mean J, mean F) over its frames."""
        return {k: tuple(np.mean(np.asarray(v), axis=0).tolist()) for k, v in sorted(self.frames.items())}

    def compute(self) -> dict[str, float]:
        per = np.asarray(list(self.per_expression().values())).reshape(-1, 2)
        if len(per) == 0:
            return {"J": float("nan"), "F": float("nan"), "J&F": float("nan"), "expressions": 0}
        j, f = 100.0 * per.mean(axis=0)
        return {"J": float(j), "F": float(f), "J&F": float((j + f) / 2), "expressions": len(per)}


# --------------------------------------------------------------------------- evaluators
# What a dataset's predictions are scored with. Each is built per protocol, sees every scored frame
# (``process``: prediction and ground truth at the original size, the sample's meta) and gives its
# metrics at the end (``compute``). A dataset names the evaluators it needs (its ``evaluators``).


@EVALUATORS.register("segmentation")
class SegmentationEvaluator:
    """P@0.5..0.9, AP, overall and mean IoU (and per query kind) over the scored frames."""

    def __init__(self, protocol: str) -> None:
        self.acc = MetricAccumulator.for_protocol(protocol)

    def process(self, pred: torch.Tensor, truth: torch.Tensor, meta: dict) -> dict:
        """pred, truth: (H, W) bool. Returns the frame's record ``{I, U}``."""
        inter, union = intersection_union(pred, truth)
        self.acc.add(inter, union, meta.get("kind", ""))
        return {"I": inter, "U": union}

    def compute(self) -> dict[str, float]:
        return self.acc.compute()


@EVALUATORS.register("video_jf")
class VideoJFEvaluator:
    """DAVIS J, F and J&F per expression (``meta['video']/meta['expression']``), then averaged."""

    def __init__(self, protocol: str) -> None:
        self.jf = VideoJF()

    def process(self, pred: torch.Tensor, truth: torch.Tensor, meta: dict) -> dict:
        self.jf.add(f"{meta['video']}/{meta['expression']}", pred.numpy(), truth.numpy())
        return {}

    def compute(self) -> dict[str, float]:
        if not self.jf.frames:
            return {}
        jf = self.jf.compute()
        return {"J": jf["J"], "F": jf["F"], "JF": jf["J&F"], "expressions": jf["expressions"]}

