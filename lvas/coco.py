"""Protocols ``coco`` and ``coco_top1``: A2D "mAP" as MTTR, ReferFormer, SgMg and ReferDINO compute it.

How MTTR (2022), ReferFormer, SgMg and ReferDINO score A2D / JHMDB Sentences: every (query, annotated
frame where its instance appears) is one COCO "image" with one ground-truth annotation (category 1,
iscrowd 0); every mask the model outputs for it is one detection with a score; pycocotools'
COCOeval(iouType="segm") with params.useCats = 0 ranks the detections over the whole test set and
the reported mAP is stats[0] (IoU 0.50:0.95, area all, maxDets 100). Their P@k / overall / mean IoU
take only the top-scoring mask of an image, IoU (I + 1e-6) / (U + 1e-6), compared with a strict ">".
Ties are theirs too: images carry their string ids (``v_<video>_f_<frame>_i_<instance>`` on A2D,
``v_<video>_f_<frame>`` on J-HMDB), which COCOeval sorts, so equal scores rank in that order (and
within an image in query order); the top mask is the *last* of equal highest scores (their
``sorted(..., key=score)[-1]``); the IoU is computed in float32 as their torch code does, so an I/U
of exactly 0.5, 0.7 or 0.9 does not pass ">" (float64 smoothing would let it); an A2D row whose
instance_id is not an integer (``1 (copy)``) has no image, as in their ground-truth script.
Masks: the logits on the input grid, sigmoid > 0.5 (the same pixels as logit > 0, a float32 sigmoid
rounding to exactly 0.5 only at logit 0), un-padded, resized to the original frame with nearest.
A single-mask model's mask is scored by its mean probability inside the mask (its maximum when the
mask is empty): the ranking that remains when there is one query. ``coco`` submits every candidate
(``meta["candidates"]``: further (mask, score) pairs of a query-based model), ``coco_top1`` only the
highest-scoring one (ReferFormer issue #39: 55.0 with all 5 queries, ~51.9 with the top one).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lvas.metrics import AP_THRESHOLDS, THRESHOLDS, Geometry, Protocol, intersection_union
from lvas.registry import EVALUATORS, PROTOCOLS


def _coco_masks(logits: torch.Tensor, gt: torch.Tensor, lb: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = lb.resized
    keep = (logits[:h, :w].float() > 0).float()
    up = F.interpolate(keep[None, None], size=tuple(lb.orig), mode="nearest")[0, 0] > 0.5
    return up, gt.bool()


def coco_score(logits: torch.Tensor, lb: Geometry) -> float:
    """A single mask's detection score: mean sigmoid probability over its pixels on the un-padded
    input grid; the maximum probability when it is empty (so an empty mask ranks last)."""
    h, w = lb.resized
    p = torch.sigmoid(logits[:h, :w].float())
    inside = p[p > 0.5]
    return float(inside.mean()) if inside.numel() else float(p.max())


PROTOCOLS.register("coco", "COCO mask AP as MTTR / ReferFormer (pycocotools, useCats 0, stats[0]); every candidate mask")(
    Protocol("coco", _coco_masks, 1e-6, False, evaluators={"segmentation": "coco"}, score=coco_score))
PROTOCOLS.register("coco_top1", "as coco, but only each query's highest-scoring mask is submitted")(
    Protocol("coco_top1", _coco_masks, 1e-6, False, evaluators={"segmentation": "coco_top1"}, score=coco_score))


def rle(mask: np.ndarray) -> dict:
    """pycocotools' RLE of an (H, W) bool mask, ``counts`` as text (JSON-ready)."""
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def coco_map(images: list[dict], truths: list[dict], detections: list[dict]) -> dict[str, float]:
    """COCOeval(segm, useCats 0) over ``images`` ({id, height, width}), one ground truth per image
    ({image_id, segmentation}) and ``detections`` ({image_id, segmentation, score}); returns mAP,
    AP50, AP75 in percent (stats[0:3])."""
    import contextlib
    import io
    import warnings

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not images:
        return {"mAP": float("nan"), "AP50": float("nan"), "AP75": float("nan")}
    gt = COCO()
    gt.dataset = {"images": images, "categories": [{"id": 1, "name": "referred"}],
                  "annotations": [{"id": i + 1, "category_id": 1, "iscrowd": 0, "bbox": _bbox(t["segmentation"]),
                                   "area": _area(t["segmentation"]), **t} for i, t in enumerate(truths)]}
    # pycocotools prints its progress and (numpy 2) a DeprecationWarning per mask: neither is the user's
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        gt.createIndex()
        if not detections:
            return {"mAP": 0.0, "AP50": 0.0, "AP75": 0.0}
        dt = gt.loadRes([{"category_id": 1, **d} for d in detections])
        ev = COCOeval(gt, dt, iouType="segm")
        ev.params.useCats = 0
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"mAP": 100.0 * float(ev.stats[0]), "AP50": 100.0 * float(ev.stats[1]), "AP75": 100.0 * float(ev.stats[2])}


def _area(r: dict) -> float:
    import warnings

    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return float(mask_utils.area(r))


def _bbox(r: dict) -> list[float]:
    import warnings

    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return [float(v) for v in mask_utils.toBbox(r)]


@EVALUATORS.register("coco")
class CocoEvaluator:
    """COCO mAP over every submitted mask, and MTTR's P@k (strict >), overall and mean IoU over each
    query's top-scoring mask. ``process`` needs ``meta["score"]`` (the protocol's score of ``pred``)
    and takes ``meta["candidates"]`` (further (mask, score) pairs) when a model gives them."""

    top1 = False

    def __init__(self, protocol: str) -> None:
        self.ids: set[str] = set()
        self.images: list[dict] = []
        self.truths: list[dict] = []
        self.detections: list[dict] = []
        self.inter: list[int] = []
        self.union: list[int] = []

    def _image_id(self, meta: dict) -> str | None:
        """The dataset's COCO image id (MTTR's string), else one built the same way; a frame scored
        again (several queries on one instance in a synthetic set; a clip's other annotated frames,
        ``targets: clip``) is numbered in order. None: not an image of their ground truth."""
        base = meta["image_id"] if "image_id" in meta else \
            f"v_{meta.get('video')}_f_{meta.get('frame')}_i_{meta.get('instance', 0)}"
        if base is None:
            return None
        image_id, n = base, 1
        while image_id in self.ids:
            n += 1
            image_id = f"{base}_q_{n}"
        return image_id

    def process(self, pred: torch.Tensor, truth: torch.Tensor, meta: dict) -> dict:
        # a query-based model's every query in its order (``detections``); else this mask and any further candidates
        cands = meta.get("detections") or [(pred, float(meta["score"])), *meta.get("candidates", [])]
        top_score = max(s for _, s in cands)
        best = max(i for i, (_, s) in enumerate(cands) if s == top_score)  # the last of equal scores, as MTTR
        top = torch.as_tensor(np.asarray(cands[best][0], dtype=bool))
        inter, union = intersection_union(top, truth.bool())
        image_id = self._image_id(meta)
        if image_id is None:  # not an image of their ground truth (A2D's "1 (copy)" row): not scored
            return {"I": inter, "U": union}
        self.ids.add(image_id)
        t = truth.numpy().astype(bool)
        self.images.append({"id": image_id, "height": int(t.shape[0]), "width": int(t.shape[1])})
        self.truths.append({"image_id": image_id, "segmentation": rle(t)})
        for i, (m, s) in enumerate(cands):
            if self.top1 and i != best:
                continue
            self.detections.append({"image_id": image_id, "segmentation": rle(np.asarray(m, dtype=bool)), "score": s})
        self.inter.append(inter)
        self.union.append(union)
        return {"I": inter, "U": union}  # of the top mask (the per-sample records)

    def compute(self) -> dict[str, float]:
        out = coco_map(self.images, self.truths, self.detections)
        inter, union = np.asarray(self.inter, dtype=np.float64), np.asarray(self.union, dtype=np.float64)
        if len(inter):
            # their compute_iou: float32 sums, (I + 1e-6) / (U + 1e-6) in float32, compared as a Python float
            eps = np.float32(1e-6)
            iou = ((inter.astype(np.float32) + eps) / (union.astype(np.float32) + eps)).astype(np.float64)
            out.update({f"P@{t}": 100.0 * float((iou > t).mean()) for t in THRESHOLDS})
            out["AP"] = 100.0 * float(np.mean([(iou > t).mean() for t in AP_THRESHOLDS]))
            out["oIoU"] = 100.0 * float(inter.sum() / union.sum()) if union.sum() > 0 else 100.0
            out["mIoU"] = 100.0 * float(iou.mean())
        out["n"] = len(inter)
        return out




@EVALUATORS.register("coco_top1")
class CocoTop1Evaluator(CocoEvaluator):
    """As ``coco``, submitting only each query's highest-scoring mask."""

    top1 = True
