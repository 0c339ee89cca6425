"""Cross-Modal Adaptive Modulation (CMAM), in two registered forms.

``cmam_eq6`` — the paper as written (Eq. 1-6). With V the visual map of one encoder stage (plus
the 8-d coordinates) and L the word features:

    V' = Conv(V)            1x1 Conv2d (spatial) / Conv3d (temporal, all T frames)   (1)
    L' = Conv1d(L)                                                                    (2)
    A  = L' V'^T            N x P  (P = H*W or T*H*W)                                 (3)
    w  = sum_P A;  w~ = softmax(w / ||w||_2)   over the query's real words            (4)
    l  = sum_k w~_k L_k;  l~ = sigmoid(Linear(l))   (C_V channels)                    (5)
    V~ = V + V * l~                                                                   (6)

Because Eq. 1 is linear, ``sum_P A = L' (sum_P V')`` and ``sum_P V' = Conv(sum_P V)``: we
sum the map first and never form the N x P matrix A. The result is identical (see
``tests/test_cmam_lgfs.py``, which checks a literal transcription) and costs almost nothing.

``cmam_released`` — the form of the released CSTM code (RyanHTR/CSTM), which Table 4's spatial
cost implies the paper's model used too (reports/README.md):

    v  = ReLU(BN(Conv3x3(V ⊕ coords)))    3x3 Conv2d / 3x3x3 Conv3d, C_V channels
    K  = BN(Conv1x1(v))                   key channels (512 in the release)
    Q  = BN1d(Conv1d(L))                  no bias
    w  = sum_P K^T Q  -> (B, N);  w~ = softmax(w / ||w||_2) over all N positions, padding included
    l  = sum_n w~_n L_n;  g = sigmoid(Linear(l))      Linear zero-initialised, so g - 0.5 = 0
    V~ = V + v * (g - 0.5)

Coordinates enter only through v (and hence the keys); the attention map K^T Q is formed in full,
as in the release (its FLOPs are part of the released model's 424 GMACs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lvas.models.coords import COORD_CHANNELS, with_coords
from lvas.registry import CROSS_MODAL
from lvas.settings import PositiveInt


@CROSS_MODAL.register("cmam_eq6")
class CMAM(nn.Module):
    """CMAM as written in the paper (Eq. 1-6): 1x1 keys, V + V * sigmoid(.), softmax over real words.

    Args:
        visual_channels: C_V of the stage it modulates.
        text_channels: C_L of the word features.
        channels: channels of V' and L' (the attention space).
        dims: 2 for a spatial encoder, 3 for a temporal encoder.
    """

    def __init__(self, visual_channels: int, text_channels: int, dims: int = 2, *, channels: PositiveInt = 256) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.dims = dims
        self.visual_key = conv(visual_channels + COORD_CHANNELS, channels, 1)
        self.text_key = nn.Conv1d(text_channels, channels, 1)
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


def _conv_bn(dims: int, cin: int, cout: int, kernel: int, relu: bool) -> nn.Sequential:
    conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    layers: list[nn.Module] = [conv(cin, cout, kernel, padding=(kernel - 1) // 2, bias=False), bn(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


@CROSS_MODAL.register("cmam_released")
class ReleasedCMAM(nn.Module):
    """CMAM as in the released CSTM code: 3x3 Conv-BN-ReLU on V+coords, output V + v * (sigmoid - 0.5).

    Args:
        visual_channels: C_V of the stage it modulates.
        text_channels: C_L of the word features.
        channels: channels of the keys K and queries Q (the release uses C_L = 512).
        dims: 2 for a spatial encoder (3x3 convolutions), 3 for a temporal one (3x3x3).
    """

    def __init__(self, visual_channels: int, text_channels: int, dims: int = 2, *, channels: PositiveInt = 512) -> None:
        super().__init__()
        self.dims = dims
        self.visual = _conv_bn(dims, visual_channels + COORD_CHANNELS, visual_channels, 3, relu=True)
        self.key = _conv_bn(dims, visual_channels, channels, 1, relu=False)
        self.query = nn.Sequential(nn.Conv1d(text_channels, channels, 1, bias=False), nn.BatchNorm1d(channels))
        self.gate = nn.Linear(text_channels, visual_channels)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        self.last_word_weights: torch.Tensor | None = None

    def forward(self, v: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Modulate a visual map by the query.

        Args:
            v: (B, C_V, H, W) or (B, C_V, T, H, W).
            words: (B, N, C_L) word features (padding positions included, as in the release).
            mask: (B, N) bool; unused: the release attends over all N positions.

        Returns:
            V~ with the shape of ``v``.
        """
        u = self.visual(with_coords(v))  # (B, C_V, [T,] H, W)
        k = self.key(u).flatten(2)  # (B, K, P)
        txt = words.transpose(1, 2)  # (B, C_L, N)
        q = self.query(txt)  # (B, K, N)
        w = torch.einsum("bkp,bkn->bpn", k, q).sum(1, keepdim=True)  # (B, 1, N)
        w = torch.softmax(F.normalize(w, p=2, dim=-1), dim=-1)
        self.last_word_weights = w[:, 0].detach()
        l = (w * txt).sum(-1)  # (B, C_L)
        gate = torch.sigmoid(self.gate(l))
        gate = gate.view(*gate.shape, *([1] * (v.dim() - 2)))
        return v + u * (gate - 0.5)
