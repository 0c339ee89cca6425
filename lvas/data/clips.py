"""Clip geometry shared by every dataset: frame indices around a target, resize (stretch, or
letterbox and pad) to S x S, and the way back from a prediction to the original frame."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def clip_indices(target: int, n_frames: int, length: int = 8, stride: int = 1, start: str = "centred") -> list[int]:
    """1-based frame numbers of a clip of ``length`` frames around ``target``.

    ``centred``: the target is at position ``length // 2``; indices step by ``stride`` and are
    clamped to ``[1, n_frames]`` at the video's ends. ``released`` (the released CSTM loader):
    the clip starts at ``max(1, target - length // 2 * stride)``, so near the start of a video
    position ``length // 2`` holds a later frame than the annotated one; clamped at the end.
    """
    if n_frames < 1:
        raise ValueError("a video needs at least one frame")
    if not 1 <= target <= n_frames:
        raise ValueError(f"target frame {target} outside 1..{n_frames}")
    if start == "released":
        first = max(1, target - (length // 2) * stride)
        return [min(first + k * stride, n_frames) for k in range(length)]
    if start != "centred":
        raise ValueError(f"clip start {start!r}: expected 'centred' or 'released'")
    return [min(max(target + (k - length // 2) * stride, 1), n_frames) for k in range(length)]


@dataclass(frozen=True)
class Letterbox:
    """How a frame of ``orig`` (H, W) sits in the S x S input: resized to ``resized`` (h, w) at the
    top-left corner, the rest zero padding."""

    orig: tuple[int, int]
    resized: tuple[int, int]
    size: int

    @classmethod
    def fit(cls, orig: tuple[int, int], size: int, geometry: str = "letterbox") -> "Letterbox":
        """``letterbox``: keep the aspect ratio, pad the rest; ``stretch``: fill S x S (no padding)."""
        if geometry == "stretch":
            return cls(tuple(orig), (size, size), size)
        scale = size / max(orig)
        return cls(tuple(orig), (max(1, round(orig[0] * scale)), max(1, round(orig[1] * scale))), size)

    def apply(self, x: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """(..., C, H, W) float or uint8 -> (..., C, S, S): resize to ``resized`` and zero-pad."""
        lead = x.shape[:-3]
        flat = x.reshape(-1, *x.shape[-3:])
        if tuple(flat.shape[-2:]) != self.resized:
            kw = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
            if flat.dtype == torch.uint8:  # torch's uint8 kernel wants channels-last
                flat = flat.contiguous(memory_format=torch.channels_last)
            flat = F.interpolate(flat, size=self.resized, mode=mode, **kw).contiguous()
        flat = F.pad(flat, (0, self.size - self.resized[1], 0, self.size - self.resized[0]))
        return flat.reshape(*lead, *flat.shape[-3:])

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """(..., S, S) map on the padded input -> (..., H, W) on the original frame (bilinear)."""
        crop = x[..., : self.resized[0], : self.resized[1]]
        lead = crop.shape[:-2]
        flat = crop.reshape(-1, 1, *crop.shape[-2:]).float()
        out = F.interpolate(flat, size=self.orig, mode="bilinear", align_corners=False)
        return out.reshape(*lead, *self.orig)
