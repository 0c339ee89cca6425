"""The one inference path: a batch through the model, its outputs per predicted frame, and (under
the run's protocol) masks at the original size. Used by training, evaluation, prediction on a video,
the overlays, the report's figures and the submission writer.

The model contract: ``model(clip, tokens, mask)`` returns ``logits`` (B, K, H, W) — one mask per
predicted frame — and optionally ``frames``, the K clip positions it predicts (default: the target
frame, position T // 2, for K = 1); ``aux`` are deep-supervision logits (B, K, h, w). A query-based
model also returns ``scores`` (B, K), the detection score of each of those masks, ``query`` (B,) the
index of the chosen query, and in eval mode ``candidates``: ``logits`` (B, K, Q, H, W) and ``scores``
(B, K, Q) of every query (a ranked protocol, ``coco``, submits them all). A dataset item supplies
ground truth for its annotated clip positions (``target_frames``); a frame is trained on and scored
when the model predicted it and the dataset annotated it.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from lvas.data.clips import Letterbox
from lvas.metrics import masks_for_protocol


def forward(model: torch.nn.Module, batch: dict, device: torch.device, amp: bool = False) -> dict:
    """The model's outputs on a collated batch (under bf16 autocast with ``amp``, on any device: see
    :func:`lvas.engine.setup.amp_enabled`; losses and metrics are computed in float32 afterwards, or
    in float64 for a model in float64, ``train.precision``). The clip is cast to the model's dtype."""
    clip = batch["clip"].to(device, dtype=model_dtype(model), non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        return model(clip, batch["tokens"].to(device), batch["mask"].to(device))


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The floating dtype of a model's parameters (float32 unless it was put in float64)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def predicted_frames(outputs: dict, clip_len: int) -> list[int]:
    """The clip positions of the K predicted masks."""
    k = outputs["logits"].shape[1]
    frames = outputs.get("frames")
    if frames is None:
        if k != 1:
            raise ValueError(f"the model returned {k} masks per clip without saying which frames ('frames')")
        return [clip_len // 2]
    frames = [int(f) for f in frames]
    if len(frames) != k:
        raise ValueError(f"the model returned {k} masks but names {len(frames)} frames")
    return frames


def training_pairs(outputs: dict, batch: dict, device: torch.device) -> tuple[dict, torch.Tensor]:
    """(outputs, target) for the loss over every predicted and annotated frame, flattened to N masks:
    ``logits`` (N, 1, H, W), ``aux`` [(N, 1, h, w)], target (N, 1, H, W)."""
    frames = predicted_frames(outputs, batch["clip"].shape[2])
    wanted = batch["target_frames"]
    if frames == [batch["clip"].shape[2] // 2] and all(t == frames for t in wanted):  # the usual case: as it is
        return outputs, torch.stack(batch["target"]).to(device)
    pick_b, pick_k, targets = [], [], []
    for i, (positions, target) in enumerate(zip(wanted, batch["target"])):
        for a, pos in enumerate(positions):
            if pos in frames:
                pick_b.append(i)
                pick_k.append(frames.index(pos))
                targets.append(target[a])
    if not targets:
        raise ValueError(f"the model predicts clip positions {frames}, none of which the dataset annotated")
    b, k = torch.tensor(pick_b, device=device), torch.tensor(pick_k, device=device)
    flat = {"logits": outputs["logits"][b, k][:, None],
            "aux": [a[b, k][:, None] for a in outputs.get("aux") or []]}
    return flat, torch.stack(targets)[:, None].to(device)


def clip_targets(outputs: dict, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """The ground truth of every predicted frame of every clip at once, for a loss that matches
    predictions to objects across a clip (``per_clip``, e.g. ``referformer``): ``masks`` (B, K, S, S)
    on the input grid (zero where a frame is not annotated) and ``annotated`` (B, K) bool."""
    frames = predicted_frames(outputs, batch["clip"].shape[2])
    first = batch["target"][0]
    b, k = len(batch["target"]), len(frames)
    masks = torch.zeros(b, k, *first.shape[-2:], dtype=first.dtype, device=first.device)
    annotated = torch.zeros(b, k, dtype=torch.bool)
    for i, (positions, target) in enumerate(zip(batch["target_frames"], batch["target"])):
        for a, pos in enumerate(positions):
            if pos in frames:
                masks[i, frames.index(pos)] = target[a]
                annotated[i, frames.index(pos)] = True
    if not annotated.any():
        raise ValueError(f"the model predicts clip positions {frames}, none of which the dataset annotated")
    return {"masks": masks.to(device, dtype=outputs["logits"].dtype if outputs["logits"].dtype == torch.float64
                                else torch.float32), "annotated": annotated.to(device)}


def scored_frames(outputs: dict, batch: dict) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict]]:
    """Every predicted frame that has ground truth: (logits (S, S) float on the CPU, ground truth (H, W)
    bool, the sample's meta for that frame — ``position`` and ``frame`` set)."""
    frames = predicted_frames(outputs, batch["clip"].shape[2])
    logits = outputs["logits"].float().cpu()
    scores = outputs["scores"].float().cpu() if "scores" in outputs else None
    cands = outputs.get("candidates")
    if cands is not None:
        cands = {"logits": cands["logits"].float().cpu(), "scores": cands["scores"].float().cpu()}
    for i, (positions, gts, meta) in enumerate(zip(batch["target_frames"], batch["gt"], batch["meta"])):
        for a, pos in enumerate(positions):
            if pos not in frames:
                continue
            k = frames.index(pos)
            m = meta if pos == positions[0] else {k: v for k, v in meta.items() if k != "image_id"} | {
                "frame": _frame_number(meta, pos)}  # another frame of the clip: the sample's image id is not its
            if "frame_names" in meta:  # the file name of each clip frame (submissions, per-frame records)
                m = {**m, "frame_name": meta["frame_names"][pos]}
            extra = {} if scores is None else {"model_score": float(scores[i, k])}
            if cands is not None:  # every query's mask and score (a ranked protocol submits them all)
                extra.update(candidate_logits=cands["logits"][i, k], candidate_scores=cands["scores"][i, k],
                             query=int(outputs["query"][i]) if "query" in outputs else -1)
            yield logits[i, k], gts[a], {**m, "position": pos, **extra}


def _frame_number(meta: dict, pos: int) -> Any:
    numbers = meta.get("frames")
    return numbers[pos] if numbers is not None and pos < len(numbers) else f"{meta.get('frame')}+{pos}"


def geometry(meta: dict, size: int) -> Letterbox:
    """Where the sample's frame sits in the S x S input."""
    return Letterbox(tuple(meta["orig"]), tuple(meta["resized"]), size)


def masks(logits: torch.Tensor, gt: torch.Tensor, meta: dict, protocol) -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction and ground truth (H, W) bool at the original size under ``protocol`` (the postprocess
    of the run's own protocol: threshold, resampling, the ground truth's round trip)."""
    return masks_for_protocol(logits, gt, geometry(meta, logits.shape[-1]), protocol)
