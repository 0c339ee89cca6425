"""The decoder (paper Eq. 9) with per-branch stage projections, fusion and a mask head.

For each branch (spatial / temporal) and stage i, the target-frame map V^i is concatenated with
the 8-d coordinates and the tiled sentence vector (this is where vision and language meet when
there is no CMAM) and projected to D channels (1x1 conv, GroupNorm, ReLU). With two branches the
projections are fused per stage (``add`` / ``max`` / ``lgfs``) into V_F^i. Then, top-down,

    V_D^5 = V_F^5,   V_D^i = V_F^i + Upsample(V_D^{i+1})        (Eq. 9)

each followed by an optional 3x3 refinement conv. A 1x1 head turns V_D^1 (stride 2) into mask
logits, upsampled (bilinear) to the input resolution; with deep supervision, heads on
V_D^2..V_D^5 give auxiliary logits at their own strides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lvas.models.base import StageSpec
from lvas.models.coords import with_coords
from lvas.registry import FUSIONS


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 2) or 1, channels)


class Decoder(nn.Module):
    """Projection + fusion + top-down decoder + mask head.

    Args:
        branch_specs: branch name -> the five StageSpec of its encoder.
        text_channels: C_L of each branch's sentence vector.
        channels: D, the decoder width.
        fusion: a FUSIONS name, used when there are two branches.
        refine: 3x3 conv after each top-down sum.
        deep_supervision: auxiliary heads on stages 2..5.
    """

    def __init__(self, branch_specs: dict[str, list[StageSpec]], text_channels: int, channels: int = 256,
                 fusion: str | None = None, refine: bool = True, deep_supervision: bool = True) -> None:
        super().__init__()
        self.branches = list(branch_specs)
        self.proj = nn.ModuleDict({
            b: nn.ModuleList(
                nn.Sequential(nn.Conv2d(s.channels + 8 + text_channels, channels, 1, bias=False),
                              _norm(channels), nn.ReLU(inplace=True))
                for s in specs
            )
            for b, specs in branch_specs.items()
        })
        self.fusion = None
        if len(self.branches) == 2:
            if fusion is None:
                raise ValueError("two branches need a fusion")
            self.fusion = nn.ModuleList(
                FUSIONS.build(fusion, channels=channels, text_channels=2 * text_channels) for _ in range(5)
            )
        self.refine = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), _norm(channels),
                          nn.ReLU(inplace=True)) if refine else nn.Identity()
            for _ in range(5)
        )
        self.head = nn.Conv2d(channels, 1, 1)
        self.aux_heads = nn.ModuleList(nn.Conv2d(channels, 1, 1) for _ in range(4)) if deep_supervision else None

    def forward(self, feats: dict[str, list[torch.Tensor]], sentences: dict[str, torch.Tensor],
                out_size: tuple[int, int]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Decode the target-frame maps into mask logits.

        Args:
            feats: branch -> five maps (B, C_i, H/2^i, W/2^i).
            sentences: branch -> (B, C_L) sentence vector.
            out_size: (H, W) of the input.

        Returns:
            ``logits``: (B, 1, H, W); ``aux``: list of (B, 1, H/2^i, W/2^i) for i = 2..5 (empty
            without deep supervision).
        """
        projected = {}
        for b in self.branches:
            s = sentences[b]
            maps = []
            for proj, v in zip(self.proj[b], feats[b]):
                tiled = s[:, :, None, None].expand(-1, -1, *v.shape[-2:])
                maps.append(proj(torch.cat([with_coords(v), tiled.to(v.dtype)], 1)))
            projected[b] = maps
        if self.fusion is not None:
            sentence = torch.cat([sentences[b] for b in self.branches], 1)
            fused = [f(vs, vt, sentence) for f, vs, vt in
                     zip(self.fusion, projected[self.branches[0]], projected[self.branches[1]])]
        else:
            fused = projected[self.branches[0]]
        decoded: list[torch.Tensor] = [None] * 5  # type: ignore[list-item]
        x = self.refine[4](fused[4])
        decoded[4] = x
        for i in range(3, -1, -1):
            up = F.interpolate(x, size=fused[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.refine[i](fused[i] + up)
            decoded[i] = x
        logits = F.interpolate(self.head(decoded[0]), size=out_size, mode="bilinear", align_corners=False)
        aux = [h(d) for h, d in zip(self.aux_heads, decoded[1:])] if self.aux_heads is not None else []
        return {"logits": logits, "aux": aux}
