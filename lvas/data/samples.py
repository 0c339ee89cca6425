"""What every dataset shares: reading a frame image, turning (frames, mask, query) into a model
input, skipping bad samples on request, and collating a batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lvas.data.clips import Letterbox
from lvas.data.errors import DataError
from lvas.models.inputs import InputSpec


def plain_name(name: Any, what: str, path: Path) -> str:
    """A video id or frame name read from an annotation file, refused (DataError naming ``path``)
    unless it is one plain path part: a crafted file cannot make lvas read outside the dataset root."""
    s = str(name)
    if not s or s in (".", "..") or "/" in s or "\\" in s or any(ord(c) < 32 for c in s):
        raise DataError(path, f"{what} is not a plain file name", quoted=s)
    return s


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


def _pil_resize(imgs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, 3, H, W) uint8 -> (T, 3, h, w) float in [0, 1] with Pillow's bilinear filter: what
    torchvision's ``Resize`` + ``ToTensor`` do to a PIL image in the released loader."""
    from PIL import Image

    out = [torch.from_numpy(np.array(Image.fromarray(f.permute(1, 2, 0).numpy()).resize(
        (size[1], size[0]), Image.BILINEAR))).permute(2, 0, 1) for f in imgs]
    return torch.stack(out).float().div_(255.0)


def make_item(imgs: torch.Tensor, gt: torch.Tensor, mask_path: Path, size: int, vocab, query: str,
              max_words: int, meta: dict[str, Any], spec: InputSpec | None = None) -> dict[str, Any]:
    """One model input under the input pipeline ``spec`` (default: stretch).

    Args:
        imgs: (T, 3, H, W) uint8 frames of the clip.
        gt: (H, W) bool ground truth of the target frame (read from ``mask_path``).

    Returns:
        ``clip`` (3, T, S, S) float in [0, 1]; ``tokens``/``mask`` (N,); ``target`` (1, S, S) float on
        the input grid; ``gt`` (H, W) bool; ``meta`` (``meta`` plus the geometry).
    """
    spec = spec or InputSpec()
    orig = tuple(imgs.shape[-2:])
    if tuple(gt.shape) != orig:
        raise DataError(mask_path, f"mask is {tuple(gt.shape)} but the frame is {orig}")
    lb = Letterbox.fit(orig, size, spec.geometry)
    if spec.resampler == "pil":
        clip = lb.apply(_pil_resize(imgs, lb.resized))
    else:
        # resized while still uint8 (antialiased bilinear), then scaled: converting full-size frames
        # to float first loaded 64 clips/s, this 81-91 (`lvas bench data`, 320x320 frames -> 128)
        clip = lb.apply(imgs).float() / 255.0
    clip = clip.permute(1, 0, 2, 3).contiguous()
    if spec.target == "released":  # bilinear with align_corners to the grid, every value > 0 set to 1
        g = F.interpolate(gt[None, None].float(), size=lb.resized, mode="bilinear", align_corners=True)[0]
        target = lb.apply((g > 0).float()[None])[0]
    else:
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

    def queries(self) -> list[str]:
        """The query of every sample, in index order."""
        return [str(q) for q in self.index["query"]]

    def videos(self) -> list[str]:
        """The video of every sample, in index order (for splitting by video)."""
        col = "video" if "video" in self.index.columns else "video_id"
        return [str(v) for v in self.index[col]]


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
