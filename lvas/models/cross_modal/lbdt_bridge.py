"""LBDT's bridge ``lbdt``: Language-Bridged Duplex Transfer (Ding et al., CVPR 2022, paper §3.3).

After a stage both streams are reduced (1x1 Conv-BN) to ``channels``; ``layers`` attention layers,
each applied twice with the same weights (spatial -> temporal and temporal -> spatial); back to C_i
(1x1 Conv-BN), residual, ReLU. One attention layer (source stream S, target stream T, words W,
positional encodings P):

    W = LN(W + SelfAttn(W + P_w, W + P_w, W))              word self-attention
    W = LN(W + Attn(W, S + P_v, S + P_v))                  words gather the source stream
    T = LN(T + Attn(T + P_v, W, W))                        the target queries the words
    T = LN(T + FFN(T))
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn
from lvas.models.base import StageSpec
from lvas.models.model import Language
from lvas.registry import BRIDGES
from lvas.settings import NonNegativeFloat, PositiveInt


def sine_1d(n: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """Transformer sinusoids for positions 0..n-1: (n, dim), sin on even and cos on odd channels."""
    # computed in float64 and rounded once: the same table on every CPU (vectorised float32 sin/exp
    # differ in the last bit between instruction sets)
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    out = torch.zeros(n, dim, dtype=torch.float64)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)
    return out.to(device=device, dtype=dtype or torch.float32)


def sine_2d(dim: int, h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """2-D sinusoids (dim, h, w): the first dim/2 channels encode x (sin/cos interleaved), the rest y."""
    if dim % 4:
        raise ValueError(f"2-D positional encoding needs channels divisible by 4, got {dim}")
    half = dim // 2
    f64 = torch.float64  # rounded once, as sine_1d
    freq = torch.exp(torch.arange(0.0, half, 2, dtype=f64) * -(math.log(10000.0) / half))  # (half/2,)
    px = torch.arange(0.0, w, dtype=f64)[:, None] * freq  # (w, half/2)
    py = torch.arange(0.0, h, dtype=f64)[:, None] * freq
    out = torch.zeros(dim, h, w, dtype=f64)
    out[0:half:2] = torch.sin(px).T[:, None, :].expand(-1, h, -1)
    out[1:half:2] = torch.cos(px).T[:, None, :].expand(-1, h, -1)
    out[half::2] = torch.sin(py).T[:, :, None].expand(-1, -1, w)
    out[half + 1::2] = torch.cos(py).T[:, :, None].expand(-1, -1, w)
    return out.to(device=device, dtype=dtype or torch.float32)


class BridgeLayer(nn.Module):
    """One language-bridged transfer from a source stream to a target stream (see module docstring)."""

    def __init__(self, channels: int, heads: int, ffn: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        self.word_self = nn.MultiheadAttention(channels, heads, dropout=dropout)
        self.word_from_source = nn.MultiheadAttention(channels, heads, dropout=dropout)
        self.target_from_words = nn.MultiheadAttention(channels, heads, dropout=dropout)
        self.ffn_in = nn.Linear(channels, ffn or channels)
        self.ffn_out = nn.Linear(ffn or channels, channels)
        self.norm_word_self = nn.LayerNorm(channels)
        self.norm_word_source = nn.LayerNorm(channels)
        self.norm_target = nn.LayerNorm(channels)
        self.norm_ffn = nn.LayerNorm(channels)
        self.drop = nn.ModuleList(nn.Dropout(dropout) for _ in range(5))

    def forward(self, source: torch.Tensor, target: torch.Tensor, words: torch.Tensor, pos_v: torch.Tensor,
                pos_w: torch.Tensor, pad_w: torch.Tensor) -> torch.Tensor:
        """Sequence-first tensors: source, target (HW, B, C); words (N, B, C); pos_v (HW, B, C);
        pos_w (N, B, C); pad_w (B, N) True at padding. Returns the new target (HW, B, C)."""
        q = words + pos_w
        words = self.norm_word_self(words + self.drop[0](self.word_self(q, q, words, key_padding_mask=pad_w)[0]))
        kv = source + pos_v
        words = self.norm_word_source(words + self.drop[1](self.word_from_source(words, kv, kv)[0]))
        t = self.target_from_words(target + pos_v, words, words, key_padding_mask=pad_w)[0]
        target = self.norm_target(target + self.drop[2](t))
        ffn = self.ffn_out(self.drop[3](F.relu(self.ffn_in(target))))
        return self.norm_ffn(target + self.drop[4](ffn))


def _conv1x1_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


@BRIDGES.register("lbdt")
class LanguageBridgedDuplexTransfer(nn.Module):
    """LBDT (paper §3.3, Eq. 3-7): both streams exchange through the words, weights shared by both directions.

    Args:
        stage_specs: branch -> the StageSpec of this stage (channels C_i per stream).
        text_channels: C_L of the word features (projected to ``channels`` when different).
        channels: width of the attention (512 in the paper).
        layers: attention layers (4: "LBDT-4").
        heads: attention heads (8).
    """

    def __init__(self, stage_specs: dict[str, StageSpec], text_channels: int, *, channels: PositiveInt = 512,
                 layers: PositiveInt = 4, heads: PositiveInt = 8, dropout: NonNegativeFloat = 0.1) -> None:
        super().__init__()
        if channels % heads or channels % 4:
            raise ValueError(f"model.bridge.channels: {channels} must be divisible by model.bridge.heads ({heads}) and 4")
        self.branches = list(stage_specs)
        self.reduce = nn.ModuleDict({b: _conv1x1_bn(s.channels, channels) for b, s in stage_specs.items()})
        self.expand = nn.ModuleDict({b: _conv1x1_bn(channels, s.channels) for b, s in stage_specs.items()})
        self.words = nn.Linear(text_channels, channels) if text_channels != channels else nn.Identity()
        self.layers = nn.ModuleList(BridgeLayer(channels, heads, dropout=dropout) for _ in range(layers))

    def forward(self, maps: dict[str, torch.Tensor], lang: Language, target: int,
                specs: dict[str, StageSpec]) -> dict[str, torch.Tensor]:
        """Exchange between the two streams' maps of one stage.

        Args:
            maps: branch -> (B, C_i, H, W), or (B, C_i, T', H, W) for a 3D stream (the target-frame
                slice takes part; the update is added at every time step).
            lang: the query (its words and mask).
            target: index of the target frame in the clip.
            specs: branch -> StageSpec (temporal strides of 3D maps).

        Returns:
            branch -> the same shapes, ``ReLU(V + Conv-BN(transfer))``.
        """
        a, b = self.branches
        flat = {}
        for br in (a, b):
            v = maps[br]
            if v.dim() == 5:
                v = v[:, :, min(target // specs[br].t_stride, v.shape[2] - 1)]
            flat[br] = self.reduce[br](v)
        bsz, c, h, w = flat[a].shape
        pos_v = sine_2d(c, h, w, flat[a].device, flat[a].dtype).flatten(1).T[:, None].expand(-1, bsz, -1)
        words = self.words(lang.words[a]).transpose(0, 1)
        pos_w = sine_1d(words.shape[0], c, words.device, words.dtype)[:, None].expand(-1, bsz, -1)
        pad_w = ~lang.mask
        xa, xb = (flat[br].flatten(2).permute(2, 0, 1) for br in (a, b))
        for layer in self.layers:
            xa, xb = layer(xb, xa, words, pos_v, pos_w, pad_w), layer(xa, xb, words, pos_v, pos_w, pad_w)
        out = {}
        for br, x in ((a, xa), (b, xb)):
            up = self.expand[br](x.permute(1, 2, 0).reshape(bsz, c, h, w))
            v = maps[br]
            out[br] = F.relu(v + (up[:, :, None] if v.dim() == 5 else up))
        return out
