"""Evaluation of a model on a dataset under a named protocol."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lvas.data.clips import Letterbox
from lvas.metrics import MetricAccumulator, masks_for_protocol


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, protocol: str = "paper", device: torch.device | None = None,
             amp: bool = False, progress: bool = True, limit: int = 0, keep: int = 0) -> dict[str, Any]:
    """Metrics of ``model`` over ``loader`` (overall and by query kind).

    Returns:
        ``metrics`` (see :class:`lvas.metrics.MetricAccumulator`), ``skipped`` samples,
        ``samples``: per sample ``{id, kind, I, U}`` (what paired significance tests between two
        models need), and ``examples``: the first ``keep`` (meta, probability map, prediction,
        ground truth).
    """
    device = device or next(model.parameters()).device
    model.eval()
    acc = MetricAccumulator.for_protocol(protocol)
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
            inter, union = int((pred & truth).sum()), int((pred | truth).sum())
            acc.add(inter, union, meta.get("kind", ""))
            samples.append({"id": sample_id(meta), "kind": meta.get("kind", ""), "I": inter, "U": union})
            if len(examples) < keep:
                examples.append({"meta": meta, "prob": torch.sigmoid(lg), "pred": pred, "gt": truth})
        seen += 1
        if limit and seen >= limit:
            break
    return {"metrics": acc.compute(), "skipped": skipped, "samples": samples, "examples": examples}


def sample_id(meta: dict) -> str:
    """A test sample's name, the same in every run on the same split: video/frame/instance/query."""
    return f"{meta.get('video')}/{meta.get('frame')}/{meta.get('instance', 0)}/{meta.get('query', '')}"
