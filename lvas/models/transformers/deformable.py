"""Multi-scale deformable attention and the Deformable-DETR encoder / decoder (Zhu et al., ICLR 2021),
as ReferFormer (Wu et al., CVPR 2022) uses them, in plain PyTorch.

Multi-scale deformable attention of a query q at reference point p_q (normalised to [0, 1]) over L
feature levels x^l, with M heads and K sampling points per head and level:

    MSDeformAttn(q, p_q, {x^l}) = W_o sum_m [ sum_l sum_k A_mlqk * W_v x^l(p_q + Delta p_mlqk / (W_l, H_l)) ]

where the offsets Delta p and the weights A (softmax over the L*K points of a head) are linear maps
of q, and x^l(.) is bilinear sampling (``grid_sample``, zero padding, ``align_corners=False``). This
is the release's ``ms_deform_attn_core_pytorch`` path (what its CUDA kernel computes); there is no
compiled extension.

Encoder layer (per frame; queries are the pixels of all levels, each its own reference point):
``x = LN(x + MSDeformAttn(x + pos, p, x))``, ``x = LN(x + FFN(x))``. Decoder layer (per frame, Q
queries): ``t = LN(t + SelfAttn(t + q_pos, t + q_pos, t))``, ``t = LN(t + MSDeformAttn(t + q_pos,
p, memory))``, ``t = LN(t + FFN(t))``; with box refinement the reference point of the next layer is
``sigmoid(box_l(t)[:2] + logit(p))`` (detached). Module names follow the release, so its checkpoints
map onto these key by key.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.init import constant_, normal_, xavier_uniform_


def ms_deform_attn(value: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """The sampling and weighted sum of multi-scale deformable attention.

    Args:
        value: (N, S, M, D) values of every level's pixels, S = sum of H_l * W_l.
        shapes: [(H_l, W_l)] of the L levels.
        locations: (N, Q, M, L, K, 2) sampling points, (x, y) in [0, 1].
        weights: (N, Q, M, L, K) attention weights.

    Returns:
        (N, Q, M * D).
    """
    n, _, m, d = value.shape
    _, q, _, levels, k, _ = locations.shape
    per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * locations - 1
    sampled = []
    for lid, (h, w) in enumerate(shapes):
        v = per_level[lid].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        g = grids[:, :, :, lid].transpose(1, 2).flatten(0, 1)  # (N*M, Q, K, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    w_ = weights.transpose(1, 2).reshape(n * m, 1, q, levels * k)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * w_).sum(-1).view(n, m * d, q)
    return out.transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (see the module docstring).

    Args:
        d_model: channels; heads: M; levels: L; points: K per head and level.
    """

    def __init__(self, d_model: int = 256, levels: int = 4, heads: int = 8, points: int = 4) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by {heads} heads")
        self.d_model, self.levels, self.heads, self.points = d_model, levels, heads, points
        self.sampling_offsets = nn.Linear(d_model, heads * levels * points * 2)
        self.attention_weights = nn.Linear(d_model, heads * levels * points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: offsets pointing in M directions at distances 1..K."""
        constant_(self.sampling_offsets.weight.data, 0.0)
        thetas = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.heads, 1, 1, 2).repeat(1, self.levels,
                                                                                              self.points, 1)
        for i in range(self.points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias = nn.Parameter(grid.view(-1))
        constant_(self.attention_weights.weight.data, 0.0)
        constant_(self.attention_weights.bias.data, 0.0)
        xavier_uniform_(self.value_proj.weight.data)
        constant_(self.value_proj.bias.data, 0.0)
        xavier_uniform_(self.output_proj.weight.data)
        constant_(self.output_proj.bias.data, 0.0)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, values: torch.Tensor,
                shapes: list[tuple[int, int]], padding: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            query: (N, Q, C).
            reference: (N, Q, L, 2) points (x, y) in [0, 1], or (N, Q, L, 4) boxes (cx, cy, w, h).
            values: (N, S, C), every level's pixels.
            shapes: [(H_l, W_l)].
            padding: (N, S) bool, True on padding.

        Returns:
            (N, Q, C).
        """
        n, q, _ = query.shape
        s = values.shape[1]
        value = self.value_proj(values)
        if padding is not None:
            value = value.masked_fill(padding[..., None], 0.0)
        value = value.view(n, s, self.heads, self.d_model // self.heads)
        offsets = self.sampling_offsets(query).view(n, q, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(n, q, self.heads, self.levels * self.points)
        weights = F.softmax(weights, -1).view(n, q, self.heads, self.levels, self.points)
        if reference.shape[-1] == 2:
            norm = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
            locations = reference[:, :, None, :, None, :] + offsets / norm[None, None, None, :, None, :]
        else:
            locations = reference[:, :, None, :, None, :2] + offsets / self.points * reference[:, :, None, :, None, 2:] * 0.5
        return self.output_proj(ms_deform_attn(value, shapes, locations, weights))


def _ffn(d_model: int, d_ffn: int, dropout: float) -> dict[str, nn.Module]:
    return {"linear1": nn.Linear(d_model, d_ffn), "dropout2": nn.Dropout(dropout), "linear2": nn.Linear(d_ffn, d_model),
            "dropout3": nn.Dropout(dropout)}


class EncoderLayer(nn.Module):
    """One Deformable-DETR encoder layer (release names: self_attn, norm1, linear1, linear2, norm2)."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float, levels: int, heads: int, points: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, levels, heads, points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        for k, v in _ffn(d_model, d_ffn, dropout).items():
            setattr(self, k, v)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference, shapes, padding):
        """src, pos: (N, S, C); reference: (N, S, L, 2) -> (N, S, C)."""
        src = self.norm1(src + self.dropout1(self.self_attn(src + pos, reference, src, shapes, padding)))
        return self.norm2(src + self.dropout3(self.linear2(self.dropout2(F.relu(self.linear1(src))))))


class DecoderLayer(nn.Module):
    """One Deformable-DETR decoder layer (release names: cross_attn, norm1, self_attn, norm2, linear1,
    linear2, norm3)."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float, levels: int, heads: int, points: int) -> None:
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, levels, heads, points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt, query_pos, reference, memory, shapes, padding):
        """tgt, query_pos: (N, Q, C); reference: (N, Q, L, 2|4); memory: (N, S, C) -> (N, Q, C)."""
        q = k = tgt + query_pos
        t2 = self.self_attn(q.transpose(0, 1), k.transpose(0, 1), tgt.transpose(0, 1))[0].transpose(0, 1)
        tgt = self.norm2(tgt + self.dropout2(t2))
        tgt = self.norm1(tgt + self.dropout1(self.cross_attn(tgt + query_pos, reference, memory, shapes, padding)))
        return self.norm3(tgt + self.dropout4(self.linear2(self.dropout3(F.relu(self.linear1(tgt))))))


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x), x clamped to [0, 1] and each side kept >= eps (Deformable DETR's)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class DeformableTransformer(nn.Module):
    """The Deformable-DETR encoder over every level of a frame and the decoder of its queries.

    Args:
        d_model, heads, enc_layers, dec_layers, d_ffn, dropout, levels, enc_points, dec_points: as
            Deformable DETR (ReferFormer: 256, 8, 4, 4, 2048, 0.1, 4, 4, 4).
    """

    def __init__(self, d_model: int = 256, heads: int = 8, enc_layers: int = 4, dec_layers: int = 4,
                 d_ffn: int = 2048, dropout: float = 0.1, levels: int = 4, enc_points: int = 4,
                 dec_points: int = 4) -> None:
        super().__init__()
        self.d_model = d_model
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(copy.deepcopy(EncoderLayer(d_model, d_ffn, dropout, levels, heads,
                                                                       enc_points)) for _ in range(enc_layers))
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(copy.deepcopy(DecoderLayer(d_model, d_ffn, dropout, levels, heads,
                                                                       dec_points)) for _ in range(dec_layers))
        self.level_embed = nn.Parameter(torch.empty(levels, d_model))
        self.reference_points = nn.Linear(d_model, 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        xavier_uniform_(self.reference_points.weight.data, gain=1.0)
        constant_(self.reference_points.bias.data, 0.0)
        normal_(self.level_embed)

    @staticmethod
    def valid_ratio(pad: torch.Tensor) -> torch.Tensor:
        """(N, H, W) padding -> (N, 2): the un-padded fraction of the width and of the height."""
        _, h, w = pad.shape
        vh = torch.sum(~pad[:, :, 0], 1)
        vw = torch.sum(~pad[:, 0, :], 1)
        return torch.stack([vw.to(torch.float32) / w, vh.to(torch.float32) / h], -1)

    @staticmethod
    def encoder_references(shapes: list[tuple[int, int]], ratios: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Every pixel's own reference point, on every level: (N, S, L, 2)."""
        refs = []
        for lvl, (h, w) in enumerate(shapes):
            ry, rx = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, dtype=dtype, device=ratios.device),
                                    torch.linspace(0.5, w - 0.5, w, dtype=dtype, device=ratios.device), indexing="ij")
            ry = ry.reshape(-1)[None] / (ratios[:, None, lvl, 1] * h)
            rx = rx.reshape(-1)[None] / (ratios[:, None, lvl, 0] * w)
            refs.append(torch.stack((rx, ry), -1))
        return torch.cat(refs, 1)[:, :, None] * ratios[:, None]

    def forward(self, srcs: list[torch.Tensor], tgt: torch.Tensor, pads: list[torch.Tensor], poses: list[torch.Tensor],
                query_embed: torch.Tensor, box_heads: nn.ModuleList | None = None):
        """
        Args:
            srcs, poses: per level (N, C, H_l, W_l), N = clips x frames; pads: per level (N, H_l, W_l).
            tgt: (N, Q, C) the decoder's input (ReferFormer: the sentence, once per query).
            query_embed: (Q, C) learned query positions.
            box_heads: per decoder layer, the box head whose output refines the next reference point
                (None: no refinement).

        Returns:
            hs (layers, N, Q, C), memory per level but the last (N, C, H_l, W_l), the initial reference
            points (N, Q, 2) and each layer's input references (layers, N, Q, 2 or 4).
        """
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pad = torch.cat([m.flatten(1) for m in pads], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                         for lvl, p in enumerate(poses)], 1)
        ratios = torch.stack([self.valid_ratio(m) for m in pads], 1).to(flat.dtype)
        memory = flat
        refs = self.encoder_references(shapes, ratios, torch.float32 if flat.dtype != torch.float64 else flat.dtype)
        for layer in self.encoder.layers:
            memory = layer(memory, pos, refs, shapes, pad)
        n = memory.shape[0]
        query_pos = query_embed.unsqueeze(0).expand(n, -1, -1)
        reference = self.reference_points(query_pos).sigmoid()
        init = reference
        out, inter = tgt, []
        hs = []
        for lid, layer in enumerate(self.decoder.layers):
            if reference.shape[-1] == 4:
                ref_in = reference[:, :, None] * torch.cat([ratios, ratios], -1)[:, None]
            else:
                ref_in = reference[:, :, None] * ratios[:, None]
            out = layer(out, query_pos, ref_in, memory, shapes, pad)
            if box_heads is not None:
                delta = box_heads[lid](out)
                if reference.shape[-1] == 4:
                    new = (delta + inverse_sigmoid(reference)).sigmoid()
                else:
                    new = delta
                    new[..., :2] = delta[..., :2] + inverse_sigmoid(reference)
                    new = new.sigmoid()
                reference = new.detach()
            hs.append(out)
            inter.append(reference)
        maps, start = [], 0
        c = memory.shape[-1]
        for h, w in shapes[:-1]:
            maps.append(memory[:, start:start + h * w, :].reshape(n, h, w, c).permute(0, 3, 1, 2).contiguous())
            start += h * w
        return torch.stack(hs), maps, init, torch.stack(inter)
