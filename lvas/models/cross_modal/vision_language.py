"""ReferFormer's vision-language attention (Wu et al., CVPR 2022, §3.2 and §3.4).

* :class:`VisionLanguageFusion` -- the early fusion on every feature level before the transformer:
  each pixel v attends to the words L (with their 1-D positions P_L) and is multiplied by what it
  gathers, ``v' = v * MHA(q = v, k = L + P_L, v = L)``.
* :class:`VisionLanguageBlock` -- a block of the cross-modal FPN: self-attention over the pixels of
  all frames of a clip (queries and keys nearest-downsampled by ``sr_ratio``, the result bilinearly
  upsampled back), cross-attention to the words, FFN; post-norm.

Both take sequences in the (length, batch, channels) layout of ``nn.MultiheadAttention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class VisionLanguageFusion(nn.Module):
    """``v * MHA(v, L + P_L, L)``: pixels gate themselves by what they read in the sentence."""

    def __init__(self, d_model: int = 256, heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, memory_pad: torch.Tensor | None = None,
                pos: torch.Tensor | None = None) -> torch.Tensor:
        """tgt: (P, B, C) pixels; memory, pos: (N, B, C) words and their positions; memory_pad: (B, N)
        True on padding. Returns (P, B, C)."""
        gathered = self.multihead_attn(query=tgt, key=memory if pos is None else memory + pos, value=memory,
                                       key_padding_mask=memory_pad)[0]
        return tgt * gathered


class VisionLanguageBlock(nn.Module):
    """Self-attention over a clip's pixels (spatially reduced by ``sr_ratio``), cross-attention to the
    words, FFN (post-norm; release names: self_attn, multihead_attn, linear1/2, norm1-3)."""

    def __init__(self, d_model: int, heads: int, d_ffn: int = 2048, dropout: float = 0.1, sr_ratio: int = 1) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.sr_ratio = sr_ratio

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, t: int, h: int, w: int,
                tgt_pad: torch.Tensor | None = None, memory_pad: torch.Tensor | None = None,
                pos: torch.Tensor | None = None, query_pos: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            tgt, query_pos: (T*H*W, B, C) a clip's pixels and their positions; tgt_pad: (B, T*H*W).
            memory, pos: (N, B, C) words and their positions; memory_pad: (B, N).

        Returns:
            (T*H*W, B, C).
        """
        b = tgt.size(1)
        q = k = tgt if query_pos is None else tgt + query_pos
        if self.sr_ratio > 1:
            size = (int(h * 1.0 / self.sr_ratio), int(w * 1.0 / self.sr_ratio))
            q, k, v = (F.interpolate(rearrange(x, "(t h w) b c -> (b t) c h w", t=t, h=h, w=w), size=size, mode="nearest")
                       for x in (q, k, tgt))
            q, k, v = (rearrange(x, "(b t) c h w -> (t h w) b c", t=t) for x in (q, k, v))
            pad = tgt_pad.reshape(b * t, h, w)
            tgt_pad = F.interpolate(pad[None].float(), size=size, mode="nearest").bool()[0].reshape(b, t, *size).flatten(1)
        else:
            v = tgt
        t2 = self.self_attn(q, k, value=v, key_padding_mask=tgt_pad)[0]
        if self.sr_ratio > 1:
            t2 = rearrange(t2, "(t h w) b c -> (b t) c h w", t=t, h=size[0], w=size[1])
            t2 = F.interpolate(t2, size=(h, w), mode="bilinear", align_corners=False)
            t2 = rearrange(t2, "(b t) c h w -> (t h w) b c", t=t)
        tgt = self.norm1(tgt + self.dropout1(t2))
        t2 = self.multihead_attn(query=tgt if query_pos is None else tgt + query_pos,
                                 key=memory if pos is None else memory + pos, value=memory,
                                 key_padding_mask=memory_pad)[0]
        tgt = self.norm2(tgt + self.dropout2(t2))
        t2 = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(t2))
