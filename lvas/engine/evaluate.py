"""Evaluation of a model on a dataset under a named protocol, with the evaluators the dataset names."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lvas import signals
from lvas.data import evaluators_of
from lvas.engine.inference import forward, geometry, masks, scored_frames
from lvas.metrics import get_protocol
from lvas.registry import EVALUATORS, PROTOCOLS


class Scores:
    """One protocol's evaluators over the scored frames (``process``), merged metrics (``compute``)."""

    def __init__(self, protocol: str, evaluators: tuple[str, ...]) -> None:
        self.protocol = protocol
        self.spec = get_protocol(protocol)
        # a protocol may stand its own evaluator in for the dataset's (coco: mAP for segmentation)
        names = [self.spec.evaluators.get(name, name) for name in evaluators]
        self.evaluators = [EVALUATORS.build(name, protocol=protocol) for name in names]
        # an evaluator that reads the logits itself (Ref-DAVIS17's merge of a video's objects)
        self.needs_logits = any(getattr(ev, "needs_logits", False) for ev in self.evaluators)

    def process(self, logits: torch.Tensor, gt: torch.Tensor, meta: dict) -> tuple[dict, torch.Tensor, torch.Tensor]:
        pred, truth = masks(logits, gt, meta, self.protocol)
        if self.spec.score is not None:  # a ranked protocol: the mask's detection score, the model's if it gives one
            score = meta["model_score"] if "model_score" in meta else \
                self.spec.score(logits, geometry(meta, logits.shape[-1]))
            meta = {**meta, "score": score}
            if "candidate_logits" in meta:  # every query of the model a detection, in the model's query order
                cl, cs = meta["candidate_logits"], meta["candidate_scores"]
                meta["detections"] = [(masks(cl[q], gt, meta, self.protocol)[0], float(cs[q])) for q in range(cl.shape[0])]
        if self.needs_logits:
            meta = {**meta, "logits": logits}
        record: dict = {}
        for ev in self.evaluators:
            record.update(ev.process(pred, truth, meta))
        return record, pred, truth

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for ev in self.evaluators:
            out.update(ev.compute())
        return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, protocol: str = "paper", device: torch.device | None = None,
             amp: bool = False, progress: bool = True, limit: int = 0, keep: int = 0,
             every_protocol: bool = False) -> dict[str, Any]:
    """Metrics of ``model`` over ``loader``, from the evaluators its dataset names (P@x, AP, oIoU, mIoU
    by query kind; DAVIS J, F, J&F per expression on Ref-YouTube-VOS).

    With ``every_protocol`` the same predictions are also scored under every other registered
    protocol that fits the input geometry (``by_protocol``), so a table can show how much of a gap
    between two papers is the metric.

    Returns:
        ``metrics``, ``by_protocol`` (protocol -> overall metrics, the main one included), ``skipped``
        samples, ``samples``: per scored frame ``{id, kind, I, U}`` (what tests between two models
        need), and ``examples``: the first ``keep`` (meta, probability map, prediction, ground truth).
    """
    device = device or next(model.parameters()).device
    protocol = getattr(protocol, "name", protocol)
    model.eval()
    evaluators = evaluators_of(loader.dataset)
    main = Scores(protocol, evaluators)
    # an evaluator that does not depend on the protocol (needs_logits: it resamples the logits itself) runs once
    per_protocol = tuple(n for n in evaluators if not getattr(EVALUATORS.get(n).builder, "needs_logits", False))
    others = {p: Scores(p, per_protocol) for p in PROTOCOLS.names() if p != protocol} if every_protocol else {}
    skipped, examples, seen, samples = 0, [], 0, []
    for batch in tqdm(loader, desc=f"eval ({protocol})", unit="batch", disable=not progress, leave=False):
        signals.check()
        skipped += batch["skipped"]
        if "clip" not in batch:
            continue
        outputs = forward(model, batch, device, amp)
        for lg, gt, meta in scored_frames(outputs, batch):
            record, pred, truth = main.process(lg, gt, meta)
            samples.append({"id": sample_id(meta), "kind": meta.get("kind", ""), **record})
            if tuple(meta["resized"]) != tuple(lg.shape[-2:]):  # letterboxed: stretched-frame protocols cannot score it
                others = {n: a for n, a in others.items() if not get_protocol(n).stretched}
            for other in others.values():
                other.process(lg, gt, meta)
            if len(examples) < keep:
                examples.append({"meta": meta, "prob": torch.sigmoid(lg), "pred": pred, "gt": truth})
        seen += 1
        if limit and seen >= limit:
            break
    metrics = main.compute()
    by_protocol = {name: {k: v for k, v in scores.compute().items() if "/" not in k}
                   for name, scores in [(protocol, main), *others.items()]}
    return {"metrics": metrics, "by_protocol": by_protocol, "skipped": skipped, "samples": samples, "examples": examples}


def sample_id(meta: dict) -> str:
    """A test sample's name, the same in every run on the same split: video/frame/instance/query."""
    return f"{meta.get('video')}/{meta.get('frame')}/{meta.get('instance', 0)}/{meta.get('query', '')}"
