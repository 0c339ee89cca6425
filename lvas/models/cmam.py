"""Cross-Modal Adaptive Modulation (CMAM, paper Eq. 1-6).

With V the visual map of one encoder stage (plus the 8-d coordinates) and L the word features:

    V' = Conv(V)            1x1 Conv2d (spatial) / Conv3d (temporal, all T frames)   (1)
    L' = Conv1d(L)                                                                    (2)
    A  = L' V'^T            N x P  (P = H*W or T*H*W)                                 (3)
    w  = sum_P A;  w~ = softmax(w / ||w||_2)   over the query's real words            (4)
    l  = sum_k w~_k L_k;  l~ = sigmoid(Linear(l))   (C_V channels)                    (5)
    V~ = V + V * l~                                                                   (6)

Because Eq. 1 is linear, ``sum_P A = L' (sum_P V')`` and ``sum_P V' = Conv(sum_P V)``: we
sum the map first and never form the N x P matrix A. The result is identical (see
``tests/test_cmam_lgfs.py``, which checks a literal transcription) and costs almost nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from lvas.models.coords import with_coords


class CMAM(nn.Module):
    """One CMAM block for a visual map of ``visual_channels`` channels.

    Args:
        visual_channels: C_V of the stage it modulates.
        text_channels: C_L of the word features.
        key_channels: channels of V' and L' (the attention space).
        dims: 2 for a spatial encoder, 3 for a temporal encoder.
    """

    def __init__(self, visual_channels: int, text_channels: int, key_channels: int = 256, dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.dims = dims
        self.visual_key = conv(visual_channels + 8, key_channels, 1)
        self.text_key = nn.Conv1d(text_channels, key_channels, 1)
        self.gate = nn.Linear(text_channels, visual_channels)
        self.last_word_weights: torch.Tensor | None = None  # (B, N), kept for the Fig. 5 plots

    def forward(self, v: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Modulate a visual map by the query.

        Args:
            v: (B, C_V, H, W) or (B, C_V, T, H, W).
            words: (B, N, C_L) word features.
            mask: (B, N) bool, True for real words.

        Returns:
            V~ with the shape of ``v``.
        """
        vc = with_coords(v)
        positions = vc[0, 0].numel()
        # sum over positions of Conv(V) == Conv applied to the summed map (1x1, linear)
        summed = vc.flatten(2).sum(-1)  # (B, C_V + 8)
        w_vis = self.visual_key.weight.flatten(1)  # (K, C_V + 8)
        v_sum = summed @ w_vis.t() + positions * self.visual_key.bias  # (B, K) = sum_P V'
        l_key = self.text_key(words.transpose(1, 2))  # (B, K, N)
        w = torch.einsum("bkn,bk->bn", l_key, v_sum)  # (B, N) = sum_P A
        w = w.masked_fill(~mask, 0.0)
        w = w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)
        w = torch.softmax(w.masked_fill(~mask, float("-inf")), dim=1)
        self.last_word_weights = w.detach()
        l = torch.einsum("bn,bnc->bc", w, words)
        gate = torch.sigmoid(self.gate(l))
        gate = gate.view(*gate.shape, *([1] * (v.dim() - 2)))
        return v + v * gate
