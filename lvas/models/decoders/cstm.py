"""Decoders: stage maps of one or two branches -> mask logits. Two registered forms.

``eq9`` — the paper's decoder (Eq. 9). For each branch and stage i the target-frame map V^i is
projected to D channels (1x1 conv, GroupNorm, ReLU). A branch without CMAM meets the language
here (paper §4.4): its projection also sees the 8-d coordinates and the sentence vector, added
as a per-sample bias (``W [v; c; s] = W_v v + W_c c + W_s s``: the same function as tiling the
sentence into every pixel before a 1x1 conv, without the tiling). With two branches the
projections are fused per stage (``add`` / ``max`` / ``lgfs`` / ``concat``) into V_F^i. Then,
top-down,

    V_D^5 = V_F^5,   V_D^i = V_F^i + Upsample(V_D^{i+1})        (Eq. 9)

each followed by an optional 3x3 refinement conv. A 1x1 head turns V_D^1 (stride 2) into mask
logits, upsampled (bilinear) to the input resolution; with deep supervision, heads on
V_D^2..V_D^5 give auxiliary logits at their own strides.

``released`` — the decoder of the released CSTM code: per stage a 3x3 Conv-BN-ReLU to D for each
branch, fusion (the release: ``concat`` + 3x3), a top-down merge by concatenation + 3x3
Conv-BN-ReLU after a bilinear (align_corners) x2 upsampling, and six 3x3-3x3-1x1 heads on the
maps at strides 32, 16, 8, 4, 2 and 1 (the last is the stride-2 map upsampled). The full
resolution head gives the logits; the other five are the auxiliary outputs.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lvas.models.base import StageSpec
from lvas.models.coords import COORD_CHANNELS, with_coords
from lvas.models.model import Language
from lvas.registry import DECODERS
from lvas.settings import PositiveInt


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 2) or 1, channels)


def fuse_branches(fusions: nn.ModuleList | None, maps: dict[str, list[torch.Tensor]], joint: torch.Tensor,
                  branches: list[str]) -> list[torch.Tensor]:
    """Per-stage fusion of two branches' maps (each fusion sees the joint sentence), or the one branch's maps."""
    if fusions is None:
        return maps[branches[0]]
    return [f(vs, vt, joint) for f, vs, vt in zip(fusions, maps[branches[0]], maps[branches[1]])]


def require_five_stages(decoder: str, branch_specs: dict[str, list[StageSpec]]) -> None:
    """Refuse, at construction and naming the keys, a branch whose encoder does not give the five
    stages (strides 2..32) a U-shaped decoder reads (e.g. ACGA's I3D stops at Mixed_4f)."""
    for b, specs in branch_specs.items():
        if len(specs) < 5 or [s.stride for s in specs[:5]] != [2, 4, 8, 16, 32]:
            raise ValueError(f"decoder {decoder} needs five encoder stages at strides 2..32 ({b} gives strides "
                             f"{[s.stride for s in specs]}): set model.{b} to a five-stage encoder "
                             f"(lvas list {b}), or another model.decoder")


@DECODERS.register("eq9")
class Decoder(nn.Module):
    """Projection + fusion + top-down decoder of Eq. 9 + mask head.

    Args:
        branch_specs: branch name -> the five StageSpec of its encoder.
        text_channels: C_L of each branch's sentence vector.
        sentence_channels: C_J of the joint sentence a fusion sees (default 2 C_L).
        fusion: builds the configured fusion (``fusion(channels, text_channels)``) for two branches.
        modulated: the branches that have cross-modal modules (CMAM).
        channels: D, the decoder width.
        refine: 3x3 conv after each top-down sum.
        deep_supervision: auxiliary heads on stages 2..5.
        tile: which branches' projections see the coordinates and the sentence: ``auto`` those
            without CMAM (paper §4.4), ``always`` or ``never``.
    """

    def __init__(self, branch_specs: dict[str, list[StageSpec]], text_channels: int, sentence_channels: int | None = None,
                 fusion=None, modulated: Sequence[str] = (), *, channels: PositiveInt = 256, refine: bool = True,
                 deep_supervision: bool = True, tile: Literal["auto", "always", "never"] = "auto") -> None:
        super().__init__()
        require_five_stages("eq9", branch_specs)
        sentence_channels = sentence_channels or 2 * text_channels
        self.branches = list(branch_specs)
        self.tile = tuple(b for b in self.branches
                          if tile == "always" or (tile == "auto" and b not in modulated))
        self.proj = nn.ModuleDict({
            b: nn.ModuleList(
                nn.Conv2d(s.channels + (COORD_CHANNELS if b in self.tile else 0), channels, 1, bias=False)
                for s in specs)
            for b, specs in branch_specs.items()
        })
        self.text_proj = nn.ModuleDict({
            b: nn.ModuleList(nn.Linear(text_channels, channels, bias=False) for _ in range(5)) for b in self.tile
        })
        self.proj_norm = nn.ModuleDict({
            b: nn.ModuleList(nn.Sequential(_norm(channels), nn.ReLU(inplace=True)) for _ in range(5))
            for b in self.branches
        })
        self.fusion = None
        if len(self.branches) == 2:
            if fusion is None:
                raise ValueError("two branches need a fusion")
            self.fusion = nn.ModuleList(fusion(channels, sentence_channels) for _ in range(5))
        self.refine = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), _norm(channels),
                          nn.ReLU(inplace=True)) if refine else nn.Identity()
            for _ in range(5)
        )
        self.head = nn.Conv2d(channels, 1, 1)
        self.aux_heads = nn.ModuleList(nn.Conv2d(channels, 1, 1) for _ in range(4)) if deep_supervision else None

    def forward(self, feats: dict[str, list[torch.Tensor]], lang: Language,
                out_size: tuple[int, int]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Decode the target-frame maps into mask logits.

        Args:
            feats: branch -> five maps (B, C_i, H/2^i, W/2^i).
            lang: the query (``lang.sentences``: branch -> (B, C_L); ``lang.joint``: (B, C_J)).
            out_size: (H, W) of the input.

        Returns:
            ``logits``: (B, 1, H, W); ``aux``: list of (B, 1, H/2^i, W/2^i) for i = 2..5 (empty
            without deep supervision).
        """
        projected = {}
        for b in self.branches:
            maps = []
            for i, v in enumerate(feats[b]):
                if b in self.tile:
                    x = self.proj[b][i](with_coords(v))
                    x = x + self.text_proj[b][i](lang.sentences[b].to(x.dtype))[:, :, None, None]
                else:
                    x = self.proj[b][i](v)
                maps.append(self.proj_norm[b][i](x))
            projected[b] = maps
        fused = fuse_branches(self.fusion, projected, lang.joint, self.branches)
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


def _conv3x3_bn_relu(cin: int, cout: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _head(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, 1, 1))


@DECODERS.register("released")
class ReleasedDecoder(nn.Module):
    """The released CSTM decoder: 3x3 projections, fusion, concat merges, six 3x3-3x3-1x1 heads.

    Args:
        branch_specs: branch name -> the five StageSpec of its encoder.
        text_channels: C_L (unused here).
        sentence_channels: C_J, passed on to a fusion that uses the query (default 2 C_L).
        fusion: builds the configured fusion for two branches (``concat`` in the release).
        modulated: unused (the release never tiles the sentence into the decoder).
        channels: D, the decoder width (256 in the release).
        deep_supervision: keep the five coarser heads (the release always has them).

    ``heads[k]`` decodes the map at stride 32 / 2^k (k = 0..4) and ``heads[5]`` the full
    resolution one, in the release's order.
    """

    def __init__(self, branch_specs: dict[str, list[StageSpec]], text_channels: int, sentence_channels: int | None = None,
                 fusion=None, modulated: Sequence[str] = (), *, channels: PositiveInt = 256,
                 deep_supervision: bool = True) -> None:
        super().__init__()
        require_five_stages("released", branch_specs)
        sentence_channels = sentence_channels or 2 * text_channels
        self.branches = list(branch_specs)
        self.trans = nn.ModuleDict({
            b: nn.ModuleList(_conv3x3_bn_relu(s.channels, channels, bias=False) for s in specs)
            for b, specs in branch_specs.items()
        })
        self.fuse = None
        if len(self.branches) == 2:
            if fusion is None:
                raise ValueError("two branches need a fusion")
            # the release concatenates (temporal, spatial) at stages 1-4 and (spatial, temporal) at 5
            order = lambda i: {"first": "spatial" if i == 4 else "temporal"} if fusion.name == "concat" else {}  # noqa: E731
            self.fuse = nn.ModuleList(fusion(channels, sentence_channels, **order(i)) for i in range(5))
        self.merge = nn.ModuleList(_conv3x3_bn_relu(2 * channels, channels, bias=True) for _ in range(4))
        self.heads = nn.ModuleList(_head(channels) for _ in range(6 if deep_supervision else 1))

    def forward(self, feats: dict[str, list[torch.Tensor]], lang: Language,
                out_size: tuple[int, int]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Decode the target-frame maps into mask logits.

        Args:
            feats: branch -> five maps (B, C_i, H/2^i, W/2^i).
            lang: the query (``lang.sentences``: branch -> (B, C_L); ``lang.joint``: (B, C_J)).
            out_size: (H, W) of the input.

        Returns:
            ``logits``: (B, 1, H, W) from the full-resolution head; ``aux``: the heads at strides
            32, 16, 8, 4, 2 (empty without deep supervision).
        """
        lateral = {b: [t(v) for t, v in zip(self.trans[b], feats[b])] for b in self.branches}
        fused = fuse_branches(self.fuse, lateral, lang.joint, self.branches)
        x = fused[4]
        maps = [x]
        for i in range(3, -1, -1):
            x = F.interpolate(x, size=fused[i].shape[-2:], mode="bilinear", align_corners=True)
            x = self.merge[i](torch.cat([x, fused[i]], 1))
            maps.append(x)
        maps.append(F.interpolate(x, size=out_size, mode="bilinear", align_corners=True))
        logits = self.heads[-1](maps[5])
        aux = [h(m) for h, m in zip(self.heads[:-1], maps[:5])]
        return {"logits": logits, "aux": aux}
