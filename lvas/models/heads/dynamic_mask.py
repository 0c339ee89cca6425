"""Dynamic (conditional) mask convolutions (CondInst; ReferFormer §3.4): each query's embedding is
turned by an MLP ("controller") into the weights of a small per-query network of 1x1 convolutions,
which runs on the shared mask features concatenated with the query's relative coordinates:

    theta_q = MLP(h_q),   m_q = conv_{theta_q}([F; x - x_q; y - y_q])      (ReLU between layers)

where (x_q, y_q) is the query's reference point in input pixels and (x, y) each feature cell's
centre (stride 4). ``layers`` convolutions: (C + 2) -> c -> ... -> 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn



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


class MLP(nn.Module):
    """``layers`` linear layers with ReLU between them (DETR's MLP; release name ``layers``)."""

    def __init__(self, cin: int, hidden: int, cout: int, layers: int) -> None:
        super().__init__()
        dims = [hidden] * (layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip([cin, *dims], [*dims, cout]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


def locations(h: int, w: int, stride: int, device, dtype) -> torch.Tensor:
    """Centres of an h x w grid of stride ``stride`` in input pixels: (h * w, 2) as (x, y)."""
    xs = torch.arange(0, w * stride, step=stride, dtype=dtype, device=device)
    ys = torch.arange(0, h * stride, step=stride, dtype=dtype, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((x.reshape(-1), y.reshape(-1)), dim=1) + stride // 2


class DynamicMaskHead(nn.Module):
    """The controller and the per-query convolutions (see the module docstring).

    Args:
        hidden: width of the query embeddings.
        in_channels: C, the mask features' channels.
        channels: c, the dynamic layers' width; layers: their number.
        rel_coord: concatenate the relative coordinates.
        feat_stride, out_stride: strides of the mask features and of the output masks.
    """

    def __init__(self, hidden: int, in_channels: int, channels: int = 8, layers: int = 3, rel_coord: bool = True,
                 feat_stride: int = 4, out_stride: int = 4) -> None:
        super().__init__()
        self.channels, self.layers, self.rel_coord = channels, layers, rel_coord
        self.feat_stride, self.out_stride = feat_stride, out_stride
        cin = in_channels + (2 if rel_coord else 0)
        self.weight_nums = [cin * channels] + [channels * channels] * (layers - 2) + [channels]
        self.bias_nums = [channels] * (layers - 1) + [1]
        self.controller = MLP(hidden, hidden, sum(self.weight_nums) + sum(self.bias_nums), 3)
        for layer in self.controller.layers:
            nn.init.zeros_(layer.bias)
            nn.init.xavier_uniform_(layer.weight)

    def forward(self, features: torch.Tensor, queries: torch.Tensor, points: torch.Tensor,
                size: tuple[int, int]) -> torch.Tensor:
        """
        Args:
            features: (B, T, C, h, w) mask features.
            queries: (B, T*Q, D) query embeddings (frame-major).
            points: (B, T*Q, 2) reference points (x, y) in [0, 1].
            size: (H, W) of the input, which the points are scaled to.

        Returns:
            (B, T*Q, h', w') mask logits at ``out_stride``.
        """
        b, t, c, h, w = features.shape
        n = queries.shape[1]
        q = n // t
        params = self.controller(queries)
        pts = points * torch.tensor([size[1], size[0]], dtype=points.dtype, device=points.device)
        x = features.unsqueeze(2).expand(b, t, q, c, h, w)
        if self.rel_coord:
            loc = locations(h, w, self.feat_stride, features.device, torch.float32 if features.dtype != torch.float64
                            else features.dtype)
            rel = pts.reshape(b, t, q, 1, 1, 2) - loc.reshape(1, 1, 1, h, w, 2)
            x = torch.cat([x, rel.permute(0, 1, 2, 5, 3, 4).to(x.dtype)], dim=3)
        x = x.reshape(1, -1, h, w)
        params = params.flatten(0, 1)
        insts = params.shape[0]
        splits = list(torch.split_with_sizes(params, self.weight_nums + self.bias_nums, dim=1))
        weights, biases = splits[:self.layers], splits[self.layers:]
        for i in range(self.layers):
            out = self.channels if i < self.layers - 1 else 1
            x = F.conv2d(x, weights[i].reshape(insts * out, -1, 1, 1), biases[i].reshape(insts * out), groups=insts)
            if i < self.layers - 1:
                x = F.relu(x)
        x = aligned_upsample(x.reshape(-1, 1, h, w), self.feat_stride // self.out_stride)
        return x.reshape(b, n, x.shape[-2], x.shape[-1])
