"""The 8-d spatial coordinate feature concatenated to visual features at every stage (§3 of the paper).

For the cell (i, j) of an H x W grid in [-1, 1] coordinates:
``[xmin, ymin, xmax, ymax, xctr, yctr, 1/W, 1/H]``.
"""

from __future__ import annotations

import functools

import torch

COORD_CHANNELS = 8


@functools.lru_cache(maxsize=64)
def _grid(h: int, w: int) -> torch.Tensor:
    # computed in float64 and rounded once, as the released code's numpy map is
    xs = torch.arange(w, dtype=torch.float64)
    ys = torch.arange(h, dtype=torch.float64)
    xmin = (xs / w * 2 - 1).view(1, w).expand(h, w)
    xmax = ((xs + 1) / w * 2 - 1).view(1, w).expand(h, w)
    ymin = (ys / h * 2 - 1).view(h, 1).expand(h, w)
    ymax = ((ys + 1) / h * 2 - 1).view(h, 1).expand(h, w)
    return torch.stack(
        [xmin, ymin, xmax, ymax, (xmin + xmax) / 2, (ymin + ymax) / 2,
         torch.full((h, w), 1.0 / w, dtype=torch.float64), torch.full((h, w), 1.0 / h, dtype=torch.float64)]
    ).float()


def coord_feature(h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """The coordinate map of an h x w grid.

    Returns:
        (8, h, w) tensor.
    """
    return _grid(h, w).to(device=device, dtype=dtype)


def with_coords(v: torch.Tensor) -> torch.Tensor:
    """Concatenate the coordinate map to a feature map.

    Args:
        v: (B, C, H, W) or (B, C, T, H, W).

    Returns:
        (B, C + 8, H, W) or (B, C + 8, T, H, W).
    """
    h, w = v.shape[-2:]
    c = coord_feature(h, w, v.device, v.dtype)
    if v.dim() == 4:
        c = c.unsqueeze(0).expand(v.shape[0], -1, -1, -1)
    elif v.dim() == 5:
        c = c.unsqueeze(0).unsqueeze(2).expand(v.shape[0], -1, v.shape[2], -1, -1)
    else:
        raise ValueError(f"expected a 4-D or 5-D feature map, got shape {tuple(v.shape)}")
    return torch.cat([v, c], dim=1)
