"""Spatial-temporal fusion of one decoder stage: ``add``, ``max``, LGFS (paper Eq. 7-8) and the released ``concat``."""

from __future__ import annotations

import torch
from torch import nn

from lvas.registry import FUSIONS


@FUSIONS.register("add")
class AddFusion(nn.Module):
    """Element-wise sum V_S + V_T."""

    def __init__(self, channels: int, text_channels: int) -> None:
        super().__init__()

    def forward(self, v_s: torch.Tensor, v_t: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """v_s, v_t: (B, C, H, W); sentence: (B, C_L) (unused). Returns (B, C, H, W)."""
        return v_s + v_t


@FUSIONS.register("max")
class MaxFusion(nn.Module):
    """Element-wise maximum of V_S and V_T."""

    def __init__(self, channels: int, text_channels: int) -> None:
        super().__init__()

    def forward(self, v_s: torch.Tensor, v_t: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """v_s, v_t: (B, C, H, W); sentence: (B, C_L) (unused). Returns (B, C, H, W)."""
        return torch.maximum(v_s, v_t)


@FUSIONS.register("lgfs")
class LGFS(nn.Module):
    """Language-Guided Feature Selection: per-channel softmax gate between V_S and V_T (Eq. 7-8).

    ``g_S = Linear(l)``, ``g_T = Linear(l)``; softmax over each pair (g_S[c], g_T[c]);
    ``V_F = V_S * g~_S + V_T * g~_T``, with ``l`` the mean of the word features.
    """

    def __init__(self, channels: int, text_channels: int) -> None:
        super().__init__()
        self.to_spatial = nn.Linear(text_channels, channels)
        self.to_temporal = nn.Linear(text_channels, channels)
        self.last_gate: torch.Tensor | None = None  # (B, C) weight of the spatial side

    def forward(self, v_s: torch.Tensor, v_t: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """v_s, v_t: (B, C, H, W); sentence: (B, C_L). Returns (B, C, H, W)."""
        g = torch.softmax(torch.stack([self.to_spatial(sentence), self.to_temporal(sentence)]), dim=0)
        self.last_gate = g[0].detach()
        return v_s * g[0][..., None, None] + v_t * g[1][..., None, None]


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Concatenation + 3x3 Conv-BN-ReLU (the released CSTM code's fusion; it has no LGFS).

    Args:
        channels: C of each input and of the output.
        text_channels: unused (the fusion ignores the query).
        first: which branch comes first in the concatenation (the release puts the temporal map
            first at stages 1-4 and the spatial map first at stage 5; the order only matters for
            loading its weights).
    """

    def __init__(self, channels: int, text_channels: int = 0, first: str = "spatial") -> None:
        super().__init__()
        if first not in ("spatial", "temporal"):
            raise ValueError(f"first: expected 'spatial' or 'temporal', got {first!r}")
        self.first = first
        self.conv = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True))

    def forward(self, v_s: torch.Tensor, v_t: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """v_s, v_t: (B, C, H, W); sentence: (B, C_L) (unused). Returns (B, C, H, W)."""
        pair = [v_s, v_t] if self.first == "spatial" else [v_t, v_s]
        return self.conv(torch.cat(pair, 1))
