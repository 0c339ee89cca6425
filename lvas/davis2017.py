"""Ref-DAVIS17 (Khoreva et al., ACCV 2018) scored as the field scores it: the predictions of a video's
expressions are merged into one label map per annotator and frame (ReferFormer's
``inference_davis.py``), and each annotator's maps are scored by the DAVIS-2017 *unsupervised*
evaluation (``davis2017-evaluation``: ``DAVISEvaluation(task="unsupervised")``, run by ReferFormer's
``eval_davis.py`` once per annotator); papers report J, F and J&F averaged over the four annotators.

Annotators: a video's expressions come in groups of four per object, in the order ReferFormer's
``convert_davis_to_ytvos.py`` writes them -- annotator 1's first-frame expression, annotator 1's
full-video one, annotator 2's first-frame one, annotator 2's full-video one -- so expression number
``i`` (its position among the video's expressions) is annotator ``i % 4`` (``anno_0`` .. ``anno_3``)
describing the video's object number ``i // 4``.

**Merge** (:class:`Merge`; per annotator and frame): every object's probability -- the sigmoid of its
logits resized (bilinear, ``align_corners=False``) to the frame -- is set to 0 below 0.5; with a
background of 0.1 in front, each pixel takes the argmax (the first of equal maxima): object ``k``
becomes label ``k + 1``.

**Scoring** (:func:`score_sequence`; per annotator and video, ``DAVISEvaluation._evaluate_unsupervised``):

* ground truth: the video's annotation PNGs, every one (sorted by name); 255 is void and left out of
  J and F; the objects are the labels 1 .. the largest label of the *first* frame;
* proposals: the labels 1 .. the largest label of any predicted frame (at most 20); when there are
  fewer proposals than objects, empty ones are added;
* J (IoU, 1 when the union is empty) and F (boundary F, :func:`lvas.metrics.boundary_f`) for every
  proposal, object and frame; proposals are matched to objects by the Hungarian algorithm
  (``scipy.optimize.linear_sum_assignment``) on the mean over frames of (J + F) / 2;
* each matched object's J and F are their means over the frames; an annotator's J and F are the
  means over every object of every video, and its J&F their mean.

A frame the predictions do not reach (``lvas eval --limit``) is an empty prediction; the toolkit
would stop there instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lvas.metrics import boundary_f, region_j
from lvas.registry import EVALUATORS

ANNOTATORS = 4  # two annotators x (first-frame, full-video) expressions, as ReferFormer numbers them
MAX_PROPOSALS = 20  # DAVISEvaluation._evaluate_unsupervised's max_n_proposals
BACKGROUND = 0.1
VOID = 255


def probability(logits: torch.Tensor, orig: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
    """(H, W) float32 probability of one mask at the frame's size ``orig``: the logits (S, S) of the
    frame's part of the input (``resized``, at the top left) resized bilinearly
    (``align_corners=False``), then the sigmoid."""
    h, w = resized
    up = F.interpolate(logits[None, None, :h, :w].float(), size=tuple(orig), mode="bilinear", align_corners=False)
    return up[0, 0].sigmoid()


@dataclass
class Merge:
    """The running argmax of one annotator's objects in one frame: ``label`` (H, W) uint8 (0
    background, k + 1 object k) and the winning ``value`` (H, W) float32."""

    value: torch.Tensor
    label: torch.Tensor

    @classmethod
    def empty(cls, hw: tuple[int, int]) -> "Merge":
        return cls(torch.full(hw, BACKGROUND, dtype=torch.float32), torch.zeros(hw, dtype=torch.uint8))

    def add(self, obj: int, prob: torch.Tensor) -> None:
        """Object number ``obj`` (0-based) with its (H, W) probability; any arrival order gives the
        argmax over [background, object 0, object 1, ...] with the first of equal maxima."""
        if obj + 1 > MAX_PROPOSALS:
            raise ValueError(f"object number {obj + 1}: the DAVIS evaluation takes at most {MAX_PROPOSALS} per video")
        p = torch.where(prob < 0.5, torch.zeros((), dtype=prob.dtype), prob.float())
        wins = (p > self.value) | ((p == self.value) & (self.label > obj + 1))
        self.value = torch.where(wins, p, self.value)
        self.label = torch.where(wins, torch.tensor(obj + 1, dtype=torch.uint8), self.label)


def score_sequence(gt: np.ndarray, res: np.ndarray) -> tuple[list[float], list[float]]:
    """DAVIS-2017 unsupervised scores of one video: per ground-truth object (in the order of the
    matched proposals, as the toolkit lists them), the mean over frames of J and of F.

    Args:
        gt: (T, H, W) uint8 annotation labels (0 background, 255 void).
        res: (T, H, W) uint8 predicted labels.
    """
    if gt.shape != res.shape:
        raise ValueError(f"predicted labels {res.shape[1:]} but the annotation is {gt.shape[1:]} (frames x H x W)")
    from scipy.optimize import linear_sum_assignment

    keep = gt != VOID
    labels = np.where(keep, gt, 0)
    objects = [labels == k for k in range(1, int(labels[0].max()) + 1)]
    n_res = int(res.max()) if res.size else 0
    if n_res > MAX_PROPOSALS:
        raise ValueError(f"{n_res} objects predicted; the DAVIS evaluation takes at most {MAX_PROPOSALS}")
    proposals = [res == k for k in range(1, n_res + 1)]
    proposals += [np.zeros_like(keep)] * max(0, len(objects) - len(proposals))
    if not objects:
        return [], []
    j = np.zeros((len(proposals), len(objects), len(gt)))
    f = np.zeros_like(j)
    for ii, g in enumerate(objects):
        for jj, p in enumerate(proposals):
            for t in range(len(gt)):
                pt, gtt = p[t] & keep[t], g[t] & keep[t]
                j[jj, ii, t] = region_j(pt, gtt)
                f[jj, ii, t] = boundary_f(pt, gtt)
    rows, cols = linear_sum_assignment(-(j.mean(axis=2) + f.mean(axis=2)) / 2)
    return [float(np.mean(x)) for x in j[rows, cols]], [float(np.mean(x)) for x in f[rows, cols]]


def pascal_palette() -> list[int]:
    """The PASCAL VOC colour map DAVIS's annotation PNGs use (768 values)."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for k in range(8):
            r |= ((c >> 0) & 1) << (7 - k)
            g |= ((c >> 1) & 1) << (7 - k)
            b |= ((c >> 2) & 1) << (7 - k)
            c >>= 3
        out += [r, g, b]
    return out


@dataclass
class VideoMerges:
    """The merged label maps of the video being read: (annotator, frame name) -> :class:`Merge`, and
    the folder of its annotation PNGs."""

    video: str
    annotations: Path
    frames: dict[tuple[int, str], Merge] = field(default_factory=dict)

    def add(self, annotator: int, obj: int, frame: str, prob: torch.Tensor) -> None:
        key = (annotator, frame)
        if key not in self.frames:
            self.frames[key] = Merge.empty(tuple(prob.shape))
        self.frames[key].add(obj, prob)

    def labels(self, annotator: int, frame: str, hw: tuple[int, int]) -> np.ndarray:
        m = self.frames.get((annotator, frame))
        return np.zeros(hw, np.uint8) if m is None else m.label.numpy()


def read_sequence(annotations: Path) -> tuple[list[str], np.ndarray]:
    """Frame names and (T, H, W) labels of a video's annotation PNGs, every one, sorted by name (what
    the toolkit reads)."""
    from lvas.data.ytvos import read_annotation_ids

    paths = sorted(annotations.glob("*.png"))
    if not paths:
        raise ValueError(f"{annotations}: no annotation PNGs (the DAVIS evaluation scores every annotated frame)")
    maps = [read_annotation_ids(p) for p in paths]
    if len({m.shape for m in maps}) > 1:
        raise ValueError(f"{annotations}: annotation PNGs of different sizes")
    return [p.stem for p in paths], np.stack(maps).astype(np.uint8)


@EVALUATORS.register("davis17")
class Davis17Evaluator:
    """Ref-DAVIS17's J, F and J&F: per-annotator label maps (:class:`Merge`) scored by the DAVIS-2017
    unsupervised evaluation (:func:`score_sequence`), averaged over the annotators; also ``anno_k/J``,
    ``anno_k/F``, ``anno_k/JF`` and ``objects`` (scored objects per annotator).

    Needs each sample's logits (``needs_logits``) and ``meta["davis"]``: ``annotator``, ``object`` and
    ``annotations`` (the video's folder of annotation PNGs), and reads the samples video by video
    (the dataset's order): a video is scored when the next one starts, and at :meth:`compute`.
    """

    needs_logits = True

    def __init__(self, protocol: str) -> None:
        self.current: VideoMerges | None = None
        self.done: set[str] = set()
        self.per_annotator: dict[int, list[tuple[float, float]]] = {a: [] for a in range(ANNOTATORS)}

    def process(self, pred: torch.Tensor, truth: torch.Tensor, meta: dict) -> dict:
        d, video = meta["davis"], str(meta["video"])
        if self.current is None or self.current.video != video:
            if video in self.done:
                raise ValueError(f"video {video}: its samples came again after it was scored; the Ref-DAVIS17 "
                                 f"evaluation reads a video's samples together (no shuffled evaluation loader)")
            self._finish()
            self.current = VideoMerges(video, Path(d["annotations"]))
        prob = probability(meta["logits"], meta["orig"], meta["resized"])
        self.current.add(int(d["annotator"]), int(d["object"]), str(meta["frame_name"]), prob)
        return {}

    def _finish(self) -> None:
        if self.current is None:
            return
        v, self.current = self.current, None
        self.done.add(v.video)
        names, gt = read_sequence(v.annotations)
        for a in sorted({a for a, _ in v.frames}):
            res = np.stack([v.labels(a, n, gt.shape[1:]) for n in names])
            js, fs = score_sequence(gt, res)
            self.per_annotator[a] += list(zip(js, fs))

    def compute(self) -> dict[str, float]:
        self._finish()
        scored = {a: np.asarray(v) for a, v in self.per_annotator.items() if v}
        if not scored:
            return {}
        out: dict[str, float] = {}
        for a, v in scored.items():
            j, f = float(np.mean(v[:, 0])), float(np.mean(v[:, 1]))
            out.update({f"anno_{a}/J": 100 * j, f"anno_{a}/F": 100 * f, f"anno_{a}/JF": 100 * (j + f) / 2})
        for k in ("J", "F", "JF"):
            out[k] = float(np.mean([out[f"anno_{a}/{k}"] for a in scored]))
        out["objects"] = len(next(iter(scored.values())))
        return out

