"""Sinusoidal position encodings of DETR-style models (DETR, Deformable DETR, ReferFormer), computed
from a padding mask so that padding does not shift them.

    2-D (feature maps), per pixel (y, x) of the un-padded area, normalised:
        e_y = (cumsum_y(not pad) - 0.5) / (rows + 1e-6) * 2 pi,   e_x likewise over columns
        P[2k]   = sin(e / 10000^(2k / d)),   P[2k+1] = cos(e / 10000^(2k / d)),   d = C / 2
        P = [P(e_y); P(e_x)]                                                    (C channels)
    1-D (words), per real word n of the sentence, normalised:
        e_n = cumsum(real) / (words + 1e-6) * 2 pi,  the same sin / cos over C channels

Computed in float32, as the releases do; in float64 for a float64 model (``train.precision``).
"""

from __future__ import annotations

import math

import torch

SCALE = 2 * math.pi


def _work_dtype(dtype: torch.dtype | None) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _sin_cos(embed: torch.Tensor, channels: int, temperature: float) -> torch.Tensor:
    """(..., ) positions -> (..., channels): sin on even, cos on odd channels."""
    dim_t = torch.arange(channels, dtype=embed.dtype, device=embed.device)
    dim_t = temperature ** (2 * (dim_t // 2) / channels)
    pos = embed[..., None] / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_2d(pad: torch.Tensor, channels: int, temperature: float = 10000.0, dtype: torch.dtype | None = None
            ) -> torch.Tensor:
    """Position encoding of feature maps.

    Args:
        pad: (N, H, W) bool, True on padding.
        channels: C, the encoding's width (``channels / 2`` for y, then for x).

    Returns:
        (N, C, H, W).
    """
    work = _work_dtype(dtype)
    keep = ~pad
    y = keep.cumsum(1, dtype=work)
    x = keep.cumsum(2, dtype=work)
    y = (y - 0.5) / (y[:, -1:, :] + 1e-6) * SCALE
    x = (x - 0.5) / (x[:, :, -1:] + 1e-6) * SCALE
    half = channels // 2
    return torch.cat((_sin_cos(y, half, temperature), _sin_cos(x, half, temperature)), dim=3).permute(0, 3, 1, 2)


def sine_1d(pad: torch.Tensor, channels: int, temperature: float = 10000.0, dtype: torch.dtype | None = None
            ) -> torch.Tensor:
    """Position encoding of a word sequence.

    Args:
        pad: (B, N) bool, True on padding.

    Returns:
        (B, C, N).
    """
    work = _work_dtype(dtype)
    n = (~pad).cumsum(1, dtype=work)
    n = n / (n[:, -1:] + 1e-6) * SCALE
    return _sin_cos(n, channels, temperature).permute(0, 2, 1)
