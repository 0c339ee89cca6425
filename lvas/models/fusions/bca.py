"""LBDT's fusion ``bca``: Bilateral Channel Activation (Ding et al., CVPR 2022, paper §3.4).
"""

from __future__ import annotations

import torch
from torch import nn
from lvas.registry import FUSIONS


@FUSIONS.register("bca")
class BilateralChannelActivation(nn.Module):
    """Bilateral Channel Activation (LBDT §3.4): two channel gates per stream, then concat + 3x3.

    ``g_X = sigmoid(FC_X([avg(V_X); s]))`` (language) and ``e_X = sigmoid(FC'_X(ReLU(FC([avg(V_S); avg(V_T)]))))``
    (the other stream); ``V_F = Conv-BN-ReLU_3x3([V_S g_S e_S; V_T g_T e_T])``.
    """

    def __init__(self, channels: int, text_channels: int) -> None:
        super().__init__()
        self.mix = nn.Sequential(nn.Linear(2 * channels, channels), nn.ReLU(inplace=True))
        self.text_gate = nn.ModuleDict({b: nn.Linear(channels + text_channels, channels) for b in ("spatial", "temporal")})
        self.stream_gate = nn.ModuleDict({b: nn.Linear(channels, channels) for b in ("spatial", "temporal")})
        self.conv = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True))

    def forward(self, v_s: torch.Tensor, v_t: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """v_s, v_t: (B, C, H, W); sentence: (B, C_L). Returns (B, C, H, W)."""
        avg = {"spatial": v_s.mean((2, 3)), "temporal": v_t.mean((2, 3))}
        both = self.mix(torch.cat([avg["spatial"], avg["temporal"]], 1))
        out = []
        for b, v in (("spatial", v_s), ("temporal", v_t)):
            g = torch.sigmoid(self.text_gate[b](torch.cat([avg[b], sentence.to(v.dtype)], 1)))
            e = torch.sigmoid(self.stream_gate[b](both))
            out.append(v * (g * e)[:, :, None, None])
        return self.conv(torch.cat(out, 1))
