"""LBDT's temporal stream (Ding et al., CVPR 2022): a 2D encoder on the frame difference.

Temporal encoders ``diff_r50`` / ``diff_tiny`` -- ResNet-50 (or the tiny CPU encoder) on
|I_t - I_{t-k}| of the normalised frames (k = one clip step: set ``data.frames: 2`` and
``data.frame_stride: k``; the paper uses k = 6 on A2D, 5 on J-HMDB and Ref-YouTube-VOS).
"""

from __future__ import annotations

import torch
from lvas.models.backbones.spatial import ResNet50Encoder, Tiny2DEncoder
from lvas.registry import TEMPORAL_ENCODERS


class FrameDifference:
    """Mixin for a 2D encoder that sees |normalised I_t - normalised I_{t-1 step}| of a clip."""

    min_frames = 2

    def view(self, clip: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 3, 2, H, W): the frame one clip step before the target, and the target."""
        t = clip.shape[2] // 2
        if t < 1:
            raise ValueError(f"{type(self).__name__} needs at least 2 frames per clip (data.frames), got {clip.shape[2]}")
        return clip[:, :, t - 1: t + 1]

    def prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        size = (x.shape[-2], x.shape[-1])
        if min(size) < self.min_input:
            raise ValueError(f"{type(self).__name__} needs frames of at least {self.min_input} px, got {size}")
        prev, cur = x[:, :, 0], x[:, :, 1]
        if not self.raw_input:
            prev, cur = self.normalize(prev), self.normalize(cur)
        return (cur - prev).abs(), size


@TEMPORAL_ENCODERS.register("diff_r50")
class DiffResNet50Encoder(FrameDifference, ResNet50Encoder):
    """ResNet-50 (ImageNet) on the frame difference |I_t - I_{t-k}| (LBDT's temporal stream)."""


@TEMPORAL_ENCODERS.register("diff_tiny")
class DiffTinyEncoder(FrameDifference, Tiny2DEncoder):
    """The CPU-sized 2D encoder on the frame difference (not a paper component)."""
