"""What every dataset shares: reading a frame image, turning (frames, mask, query) into a model
input, skipping bad samples on request, and collating a batch."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lvas.data.clips import Letterbox
from lvas.data.errors import DataError
from lvas.inputs import InputSpec


def plain_name(name: Any, what: str, path: Path, where: str = "") -> str:
    """A video id or frame name read from an annotation file, refused (DataError naming ``path`` and
    ``where`` in it, e.g. ``line 12``) unless it is one plain path part: a crafted file cannot make
    lvas read outside the dataset root. What the file says is not quoted (it may not be an
    annotation file at all)."""
    s = str(name)
    if not s or s in (".", "..") or "/" in s or "\\" in s or any(ord(c) < 32 for c in s):
        raise DataError(path, f"{where + ': ' if where else ''}{what} is not a plain file name (one path part: no "
                              f"'/', '..' or control characters)")
    return s


MAX_PIXELS = 40_000_000  # a frame or mask larger than this is refused from its header (LVAS_MAX_PIXELS)


def max_pixels() -> int:
    try:
        return int(os.environ.get("LVAS_MAX_PIXELS", MAX_PIXELS))
    except ValueError:
        return MAX_PIXELS


def check_pixels(path: Path, h: int, w: int, what: str = "frame") -> None:
    """Refuse an image or mask whose header declares more than :func:`max_pixels` pixels (a few bytes
    of compressed data may declare gigabytes), before it is decoded."""
    if h * w > max_pixels():
        raise DataError(path, f"{what} of {w}x{h} pixels is over the limit of {max_pixels():,} "
                              f"(LVAS_MAX_PIXELS raises it)")


def image_size(path: Path, hint: str = "") -> tuple[int, int]:
    """(H, W) of an image from its header (nothing decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size[1], im.size[0]
    except FileNotFoundError:
        raise DataError(path, "missing frame" + (f" ({hint})" if hint else "")) from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(path, "corrupt frame image", quoted=e) from None


def read_image(path: Path, hint: str = "") -> torch.Tensor:
    """(3, H, W) uint8 RGB from a JPEG/PNG (Pillow); a missing, undecodable or oversized file raises
    DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    check_pixels(path, *image_size(path, hint))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(path, "missing frame" + (f" ({hint})" if hint else "")) from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(path, "corrupt frame image", quoted=e) from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def stack_frames(frames: list[torch.Tensor], paths: list[Path]) -> torch.Tensor:
    """(T, 3, H, W) from a clip's frames; a frame of another size than the first raises DataError naming it."""
    first = tuple(frames[0].shape)
    for f, p in zip(frames, paths):
        if tuple(f.shape) != first:
            raise DataError(p, f"frame of {f.shape[-1]}x{f.shape[-2]} pixels; this video's frames are "
                               f"{first[-1]}x{first[-2]}")
    return torch.stack(frames)


def resize_frames(imgs: torch.Tensor, lb: Letterbox, spec: InputSpec) -> torch.Tensor:
    """(T, 3, H, W) uint8 frames -> (T, 3, S, S) uint8 as the input pipeline places them: Pillow's
    bilinear filter (what torchvision's ``Resize`` does to a PIL image in the released loader) or torch's
    antialiased bilinear on the uint8 frames (converting full-size frames to float first loaded 64
    clips/s, this 81-91: ``lvas bench data``, 320x320 frames -> 128), then zero padding. The one
    resize of training, evaluation and ``lvas predict``."""
    if spec.resampler == "pil":
        from PIL import Image

        imgs = torch.stack([torch.from_numpy(np.array(Image.fromarray(f.permute(1, 2, 0).numpy()).resize(
            (lb.resized[1], lb.resized[0]), Image.BILINEAR))).permute(2, 0, 1) for f in imgs])
    return lb.apply(imgs)


def make_item(imgs: torch.Tensor, gt: torch.Tensor, mask_path: Path, size: int, vocab, query: str,
              max_words: int, meta: dict[str, Any], spec: InputSpec | None = None,
              more: dict[int, tuple[torch.Tensor, Path]] | None = None) -> dict[str, Any]:
    """One model input under the input pipeline ``spec`` (default: stretch).

    Args:
        imgs: (T, 3, H, W) uint8 frames of the clip.
        gt: (H, W) bool ground truth of the target frame, clip position T // 2 (read from ``mask_path``).
        more: ground truth of other annotated frames of the clip, by clip position (a dataset that
            supplies targets for several frames, for models that predict several).

    Returns:
        ``clip`` (3, T, S, S) float in [0, 1]; ``tokens``/``mask`` (N,); ``target`` (A, S, S) float on
        the input grid and ``gt`` (A, H, W) bool for the A annotated clip positions ``target_frames``
        (the target frame's first); ``meta`` (``meta`` plus the geometry).
    """
    spec = spec or InputSpec()
    orig = tuple(imgs.shape[-2:])
    lb = Letterbox.fit(orig, size, spec.geometry)
    clip = (resize_frames(imgs, lb, spec).float() / 255.0).permute(1, 0, 2, 3).contiguous()
    annotated = {imgs.shape[0] // 2: (gt, mask_path), **{k: v for k, v in (more or {}).items()
                                                        if k != imgs.shape[0] // 2}}
    targets, gts = [], []
    for _, (g, path) in annotated.items():
        if tuple(g.shape) != orig:
            raise DataError(path, f"mask is {tuple(g.shape)} but the frame is {orig}")
        targets.append(_target(g, lb, spec))
        gts.append(g.bool())
    tokens, mask = vocab.encode(query, max_words)
    return {"clip": clip, "tokens": tokens, "mask": mask, "target": torch.cat(targets), "gt": torch.stack(gts),
            "target_frames": list(annotated), "meta": {**meta, "query": query, "orig": orig, "resized": lb.resized}}


def _target(gt: torch.Tensor, lb: Letterbox, spec: InputSpec) -> torch.Tensor:
    """(H, W) bool ground truth -> (1, S, S) float training target on the input grid."""
    if spec.target == "released":  # bilinear with align_corners to the grid, every value > 0 set to 1
        g = F.interpolate(gt[None, None].float(), size=lb.resized, mode="bilinear", align_corners=True)[0]
        return lb.apply((g > 0).float()[None])[0]
    return (lb.apply(gt[None].float()) > 0.5).float()


class SampleDataset(Dataset):
    """Base of the datasets: ``self.index`` rows, ``load(i)``; with ``skip_bad`` a sample whose
    files are missing or corrupt becomes None (dropped and counted by :func:`collate`).
    ``evaluators``: what its predictions are scored with (registered EVALUATORS)."""

    index: Any
    skip_bad: bool = False
    has_masks: bool = True
    evaluators: tuple[str, ...] = ("segmentation",)

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
    for key in ("clip", "tokens", "mask"):
        out[key] = torch.stack([b[key] for b in items])
    for key in ("target", "gt", "target_frames", "meta"):  # per sample: its A annotated frames
        out[key] = [b[key] for b in items]
    return out
