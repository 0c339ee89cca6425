"""LBDT's decoder ``lbdt``: per-stream lateral 3x3 Conv-BN-ReLU on stages 2-5 summed at stride 4
(aligned bilinear upsampling), one fusion, a 4-conv tower, a 1x1 head and x4 upsampling.
"""

from __future__ import annotations

from typing import Sequence
import torch
import torch.nn.functional as F
from torch import nn
from lvas.models.base import StageSpec
from lvas.models.heads.dynamic_mask import aligned_upsample
from lvas.models.decoders.cstm import require_five_stages
from lvas.models.model import Language
from lvas.registry import DECODERS
from lvas.settings import PositiveInt


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
