"""What every dataset shares: reading a frame image, turning (frames, mask, query) into a model
input, skipping bad samples on request, and collating a batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lvas.data.clips import Letterbox
from lvas.data.errors import DataError


def read_image(path: Path, hint: str = "") -> torch.Tensor:
    """(3, H, W) uint8 RGB from a JPEG/PNG (Pillow); a missing or undecodable file raises DataError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(path, "missing frame" + (f" ({hint})" if hint else "")) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(path, f"corrupt frame image ({e})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def make_item(imgs: torch.Tensor, gt: torch.Tensor, mask_path: Path, size: int, vocab, query: str,
              max_words: int, meta: dict[str, Any]) -> dict[str, Any]:
    """One model input.

    Args:
        imgs: (T, 3, H, W) uint8 frames of the clip.
        gt: (H, W) bool ground truth of the target frame (read from ``mask_path``).

    Returns:
        ``clip`` (3, T, S, S) float in [0, 1]; ``tokens``/``mask`` (N,); ``target`` (1, S, S) float on
        the padded input; ``gt`` (H, W) bool; ``meta`` (``meta`` plus the letterbox geometry).
    """
    orig = tuple(imgs.shape[-2:])
    if tuple(gt.shape) != orig:
        raise DataError(mask_path, f"mask is {tuple(gt.shape)} but the frame is {orig}")
    lb = Letterbox.fit(orig, size)
    clip = lb.apply(imgs.float() / 255.0).permute(1, 0, 2, 3).contiguous()
    target = (lb.apply(gt[None].float()) > 0.5).float()
    tokens, mask = vocab.encode(query, max_words)
    return {"clip": clip, "tokens": tokens, "mask": mask, "target": target, "gt": gt,
            "meta": {**meta, "query": query, "orig": orig, "resized": lb.resized}}


class SampleDataset(Dataset):
    """Base of the datasets: ``self.index`` rows, ``load(i)``; with ``skip_bad`` a sample whose
    files are missing or corrupt becomes None (dropped and counted by :func:`collate`)."""

    index: Any
    skip_bad: bool = False

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        try:
            return self.load(i)
        except DataError:
            if self.skip_bad:
                return None
            raise

    def load(self, i: int) -> dict[str, Any]:
        raise NotImplementedError


def collate(batch: list[dict | None]) -> dict[str, Any]:
    """Stack a batch; drop skipped (None) samples and count them in ``skipped``."""
    items = [b for b in batch if b is not None]
    out: dict[str, Any] = {"skipped": len(batch) - len(items)}
    if not items:
        return out
    for key in ("clip", "tokens", "mask", "target"):
        out[key] = torch.stack([b[key] for b in items])
    out["gt"] = [b["gt"] for b in items]
    out["meta"] = [b["meta"] for b in items]
    return out
