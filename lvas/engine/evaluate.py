"""Evaluation of a model on a dataset under a named protocol."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lvas.data.clips import Letterbox
from lvas.metrics import MetricAccumulator, VideoJF, get_protocol, intersection_union, masks_for_protocol
from lvas.registry import PROTOCOLS


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, protocol: str = "paper", device: torch.device | None = None,
             amp: bool = False, progress: bool = True, limit: int = 0, keep: int = 0,
             every_protocol: bool = False) -> dict[str, Any]:
    """Metrics of ``model`` over ``loader`` (overall and by query kind).

    With ``every_protocol`` the same predictions are also scored under every other registered
    protocol that fits the input geometry (``by_protocol``), so a table can show how much of a
    gap between two papers is the metric.

    Samples whose ``meta`` names an ``expression`` (Ref-YouTube-VOS) are also scored per expression
    with the DAVIS region J and boundary F (:class:`lvas.metrics.VideoJF`): ``metrics`` gains ``J``,
    ``F``, ``JF`` (J&F) and ``expressions``.

    Returns:
        ``metrics`` (see :class:`lvas.metrics.MetricAccumulator`), ``by_protocol`` (protocol ->
        overall metrics, the main one included), ``skipped`` samples,
        ``samples``: per sample ``{id, kind, I, U}`` (what paired significance tests between two
        models need), and ``examples``: the first ``keep`` (meta, probability map, prediction,
        ground truth).
    """
    device = device or next(model.parameters()).device
    model.eval()
    main = _Scores(protocol)
    others = {p: _Scores(p) for p in PROTOCOLS.names() if p != protocol} if every_protocol else {}
    skipped, examples, seen, samples = 0, [], 0, []
    for batch in tqdm(loader, desc=f"eval ({protocol})", unit="batch", disable=not progress, leave=False):
        skipped += batch["skipped"]
        if "clip" not in batch:
            continue
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            out = model(batch["clip"].to(device), batch["tokens"].to(device), batch["mask"].to(device))
        logits = out["logits"][:, 0].float().cpu()
        for lg, gt, meta in zip(logits, batch["gt"], batch["meta"]):
            lb = Letterbox(tuple(meta["orig"]), tuple(meta["resized"]), lg.shape[-1])
            pred, truth = masks_for_protocol(lg, gt, lb, protocol)
            inter, union = main.add(pred, truth, meta)
            samples.append({"id": sample_id(meta), "kind": meta.get("kind", ""), "I": inter, "U": union})
            if tuple(lb.resized) != tuple(lg.shape[-2:]):  # letterboxed: stretched-frame protocols cannot score it
                others = {n: a for n, a in others.items() if not get_protocol(n).stretched}
            for name, other in others.items():
                other.add(*masks_for_protocol(lg, gt, lb, name), meta)
            if len(examples) < keep:
                examples.append({"meta": meta, "prob": torch.sigmoid(lg), "pred": pred, "gt": truth})
        seen += 1
        if limit and seen >= limit:
            break
    metrics = main.compute()
    by_protocol = {name: {k: v for k, v in scores.compute().items() if "/" not in k}
                   for name, scores in [(protocol, main), *others.items()]}
    return {"metrics": metrics, "by_protocol": by_protocol, "skipped": skipped, "samples": samples, "examples": examples}


class _Scores:
    """One protocol's accumulators: per-sample intersection and union, and for samples that name an
    ``expression`` (Ref-YouTube-VOS) the per-frame J and F of that expression."""

    def __init__(self, protocol: str) -> None:
        self.acc, self.jf = MetricAccumulator.for_protocol(protocol), VideoJF()

    def add(self, pred: torch.Tensor, truth: torch.Tensor, meta: dict) -> tuple[int, int]:
        """pred, truth: (H, W) bool at the original size. Returns (intersection, union)."""
        inter, union = intersection_union(pred, truth)
        self.acc.add(inter, union, meta.get("kind", ""))
        if "expression" in meta:
            self.jf.add(f"{meta['video']}/{meta['expression']}", pred.numpy(), truth.numpy())
        return inter, union

    def compute(self) -> dict[str, float]:
        metrics = self.acc.compute()
        if self.jf.frames:
            jf = self.jf.compute()
            metrics.update({"J": jf["J"], "F": jf["F"], "JF": jf["J&F"], "expressions": jf["expressions"]})
        return metrics


def sample_id(meta: dict) -> str:
    """A test sample's name, the same in every run on the same split: video/frame/instance/query."""
    return f"{meta.get('video')}/{meta.get('frame')}/{meta.get('instance', 0)}/{meta.get('query', '')}"
