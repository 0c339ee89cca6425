"""LBDT's components (Ding et al., CVPR 2022, "Language-Bridged Spatial-Temporal Interaction").

Registered here, each usable in any model:

* temporal encoders ``diff_r50`` / ``diff_tiny`` — a 2D encoder on the frame difference
  |I_t - I_{t-k}| of the normalised frames (k = one clip step: set ``data.frames: 2`` and
  ``data.frame_stride: k``; the paper uses k = 6 on A2D, 5 on J-HMDB and Ref-YouTube-VOS);
* text encoder ``lstm`` — one LSTM over the word vectors, shared by both streams; the sentence
  is the sum of its outputs over all N positions (padding included, as the release);
* bridge ``lbdt`` — Language-Bridged Duplex Transfer (paper §3.3): after a stage both streams
  are reduced (1x1 Conv-BN) to ``channels``; ``layers`` attention layers, each applied twice with
  the same weights (spatial -> temporal and temporal -> spatial); back to C_i (1x1 Conv-BN),
  residual, ReLU;
* fusion ``bca`` — Bilateral Channel Activation (paper §3.4);
* decoder ``lbdt`` — per-stream lateral 3x3 Conv-BN-ReLU on stages 2-5 summed at stride 4
  (aligned bilinear upsampling), one fusion, a 4-conv tower, a 1x1 head and x4 upsampling.

One attention layer (source stream S, target stream T, words W, positional encodings P):

    W = LN(W + SelfAttn(W + P_w, W + P_w, W))              word self-attention
    W = LN(W + Attn(W, S + P_v, S + P_v))                  words gather the source stream
    T = LN(T + Attn(T + P_v, W, W))                        the target queries the words
    T = LN(T + FFN(T))
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lvas.models.base import StageSpec
from lvas.models.decoder import require_five_stages
from lvas.models.model import Language
from lvas.models.spatial import ResNet50Encoder, Tiny2DEncoder
from lvas.models.text import SharedTextEncoder
from lvas.registry import BRIDGES, DECODERS, FUSIONS, TEMPORAL_ENCODERS, TEXT_ENCODERS
from lvas.settings import NonNegativeFloat, PositiveInt

# --------------------------------------------------------------------------- frame difference


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


# --------------------------------------------------------------------------- text


@TEXT_ENCODERS.register("lstm")
class LSTMTextEncoder(SharedTextEncoder):
    """Word vectors + one LSTM shared by both streams (LBDT); sentence = sum over all positions."""

    shared_sentence = True

    def __init__(self, vocab_size: int, embed_dim: int = 300, branches: Sequence[str] = ("spatial", "temporal"),
                 embeddings: np.ndarray | None = None, frozen_embedding: bool = True, *,
                 hidden: PositiveInt = 512) -> None:
        super().__init__(vocab_size, embed_dim, branches, embeddings, frozen_embedding)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=1, batch_first=True)
        self.out_channels = hidden

    @staticmethod
    def sentence(words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, C): the sum over all N positions (the release sums padding outputs too)."""
        return words.sum(1)

    def words(self, embedded: torch.Tensor) -> torch.Tensor:
        """(B, N, E) -> (B, N, C): the LSTM's outputs at every position."""
        return self.lstm(embedded)[0]


# --------------------------------------------------------------------------- positional encodings


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


# --------------------------------------------------------------------------- bridge


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


# --------------------------------------------------------------------------- fusion


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


# --------------------------------------------------------------------------- decoder


def aligned_upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Upsample (B, C, h, w) by an integer ``factor`` so that output pixel centres line up with the
    input's (AdelaiDet's ``aligned_bilinear``, used by LBDT): replicate-pad one pixel right and
    bottom, resize to (f h + 1, f w + 1) with align_corners, shift by f // 2, crop to (f h, f w)."""
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    x = F.pad(x, (0, 1, 0, 1), mode="replicate")
    x = F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    x = F.pad(x, (factor // 2, 0, factor // 2, 0), mode="replicate")
    return x[:, :, : factor * h, : factor * w]


def _conv3x3_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@DECODERS.register("lbdt")
class LBDTDecoder(nn.Module):
    """LBDT's decoder: per-stream lateral maps of stages 2-5 summed at stride 4, fusion, tower, x4.

    Args:
        branch_specs: branch -> its encoder's StageSpecs (stages 2..5 are used).
        text_channels: C_L (unused).
        sentence_channels: C_J of the sentence the fusion sees.
        fusion: builds the configured fusion for two streams (``bca`` in the release); None for one.
        modulated: unused (LBDT has no tiling).
        channels: D (128 in the release).
    """

    def __init__(self, branch_specs: dict[str, list[StageSpec]], text_channels: int,
                 sentence_channels: int | None = None, fusion=None, modulated: Sequence[str] = (), *,
                 channels: PositiveInt = 128) -> None:
        super().__init__()
        self.branches = list(branch_specs)
        require_five_stages("lbdt", branch_specs)
        self.lateral = nn.ModuleDict({b: nn.ModuleList(_conv3x3_bn_relu(s.channels, channels) for s in specs[1:5])
                                      for b, specs in branch_specs.items()})
        self.fusion = fusion(channels, sentence_channels or text_channels) if len(self.branches) == 2 else None
        self.tower = nn.Sequential(*(_conv3x3_bn_relu(channels, channels) for _ in range(4)), nn.Conv2d(channels, 1, 1))

    def forward(self, feats: dict[str, list[torch.Tensor]], lang: Language,
                out_size: tuple[int, int]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Decode.

        Args:
            feats: branch -> five maps (B, C_i, H/2^i, W/2^i).
            lang: the query (``lang.joint`` goes to the fusion).
            out_size: (H, W) of the input.

        Returns:
            ``logits`` (B, 1, H, W); ``aux``: [].
        """
        summed = {}
        for b in self.branches:
            maps = [lat(v) for lat, v in zip(self.lateral[b], feats[b][1:5])]
            x = maps[0]
            for m in maps[1:]:
                f = x.shape[-1] // m.shape[-1]
                up = aligned_upsample(m, f) if f * m.shape[-1] == x.shape[-1] and f * m.shape[-2] == x.shape[-2] \
                    else F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)
                x = x + up
            summed[b] = x
        z = self.fusion(summed[self.branches[0]], summed[self.branches[1]], lang.joint) if self.fusion is not None \
            else summed[self.branches[0]]
        logits = aligned_upsample(self.tower(z), 4)
        if tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return {"logits": logits, "aux": []}
