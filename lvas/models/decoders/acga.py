"""ACGA's decoder ``acga`` (Wang et al., ICCV 2019): the asymmetric cross-guided attention on the
last encoder map and three heads. With V the L2-normalised visual map (C channels) and c the 8-d
coordinates:

    vision-guided language attention   A = softmax_words(W_r [V; c] . L / sqrt(E)),  L_att = A L^T
    language-guided vision attention   g = W_g maxpool(L);  K = W_k [V; c] * g,  Q = W_q [V; c] * g
                                       V_att = softmax(K Q^T / sqrt(C + 8)) W_v [V; c]

Heads at 1x, 4x and 16x the map (two ConvTranspose2d(k 8, s 4) + 3x3), each on
[vision; L_att; c] (3x3-3x3-1x1); a 3x3 conv over the three (upsampled) responses gives the
logits; the two coarser responses are the auxiliary outputs (loss ``acga`` sums all three).
"""

from __future__ import annotations

from typing import Sequence
import torch
import torch.nn.functional as F
from torch import nn
from lvas.models.base import StageSpec
from lvas.models.coords import COORD_CHANNELS, with_coords
from lvas.models.model import Language
from lvas.registry import DECODERS
from lvas.settings import PositiveInt


def _normal_init(m: nn.Module) -> None:
    """ACGA's ``weight_init`` for Linear layers (N(0, 0.02), zero bias); convolutions keep PyTorch's."""
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.02)
        nn.init.zeros_(m.bias)


class CrossGuidedAttention(nn.Module):
    """ACGA's two attentions on one map (see the module docstring).

    Args:
        visual_channels: C of the visual map.
        text_channels: E of the word features.
    """

    def __init__(self, visual_channels: int, text_channels: int) -> None:
        super().__init__()
        cv = visual_channels + COORD_CHANNELS
        self.reduce = nn.Linear(cv, text_channels)
        self.key = nn.Linear(cv, cv)
        self.query = nn.Linear(cv, cv)
        self.value = nn.Linear(cv, cv)
        self.gate = nn.Linear(text_channels, cv)
        self.visual_channels = visual_channels
        self.apply(_normal_init)

    def forward(self, v: torch.Tensor, words: torch.Tensor, sentence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """v: (B, C, h, w) (already L2-normalised); words: (B, N, E); sentence: (B, E) max-pooled words.

        Returns:
            (attended text (B, E, h, w), attended vision (B, C, h, w)).
        """
        b, _, h, w = v.shape
        vc = with_coords(v).flatten(2).transpose(1, 2)  # (B, hw, C + 8)
        e = words.shape[-1]
        score = torch.softmax(self.reduce(vc) @ words.transpose(1, 2) / e ** 0.5, dim=-1)  # (B, hw, N)
        text = (score @ words).transpose(1, 2).reshape(b, e, h, w)
        g = self.gate(sentence)[:, None]
        k, q = self.key(vc) * g, self.query(vc) * g
        attn = torch.softmax(k @ q.transpose(1, 2) / vc.shape[-1] ** 0.5, dim=-1)  # (B, hw, hw)
        vis = (attn @ self.value(vc)).transpose(1, 2).reshape(b, -1, h, w)
        return text, vis[:, : self.visual_channels]


def _mask_head(cin: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(width, 1, 1))


def _deconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 8, stride=4, padding=2), nn.Conv2d(cout, cout, 3, padding=1))


@DECODERS.register("acga")
class ACGADecoder(nn.Module):
    """ACGA's attention and three heads on the last map of the one stream.

    Args:
        branch_specs: one branch -> its StageSpecs (the last is used: 832 channels at stride 16
            for ``i3d_mixed4f``).
        text_channels: E of the word features (300).
        sentence_channels: unused (the gate takes the max-pooled words, E wide).
        fusion, modulated: unused (one stream, no tiling).
        channels: M, the medium width (256 in the release); the large one is M / 2 and the
            heads are M, M / 2, M / 4 wide.
    """

    def __init__(self, branch_specs: dict[str, list[StageSpec]], text_channels: int,
                 sentence_channels: int | None = None, fusion=None, modulated: Sequence[str] = (), *,
                 channels: PositiveInt = 256) -> None:
        super().__init__()
        if len(branch_specs) != 1:
            raise ValueError(f"decoder acga decodes one stream (ACGA has no spatial encoder); got {list(branch_specs)} "
                             f"(set model.mode: temporal or spatial)")
        self.branch = next(iter(branch_specs))
        cv, e, m = branch_specs[self.branch][-1].channels, text_channels, channels
        self.attention = CrossGuidedAttention(cv, e)
        self.head_small = _mask_head(cv + COORD_CHANNELS + e, m)
        self.deconv_small = _deconv(cv, m)
        self.head_medium = _mask_head(m + COORD_CHANNELS + e, m // 2)
        self.deconv_medium = _deconv(m, m // 2)
        self.head_large = _mask_head(m // 2 + COORD_CHANNELS + e, m // 4)
        self.fuse = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, feats: dict[str, list[torch.Tensor]], lang: Language,
                out_size: tuple[int, int]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Decode.

        Args:
            feats: the one branch -> its maps; the last (B, C, h, w) is used.
            lang: the query (``lang.words`` (B, N, E) and ``lang.joint``, the max-pooled words).
            out_size: (H, W) of the input.

        Returns:
            ``logits`` (B, 1, H, W): the fused response; ``aux``: the responses at (h, w) and (4h, 4w).
        """
        v = F.normalize(feats[self.branch][-1], p=2, dim=1)
        words = lang.words[self.branch]
        text, vis = self.attention(v, words, lang.joint.to(v.dtype))

        def up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

        small = self.head_small(with_coords(torch.cat([vis, text], 1)))
        d1 = self.deconv_small(vis)
        medium = self.head_medium(with_coords(torch.cat([d1, up(text, d1)], 1)))
        d2 = self.deconv_medium(d1)
        large = self.head_large(with_coords(torch.cat([d2, up(text, d2)], 1)))
        fused = self.fuse(torch.cat([up(small, large), up(medium, large), large], 1))
        if tuple(fused.shape[-2:]) != tuple(out_size):
            fused = F.interpolate(fused, size=out_size, mode="bilinear", align_corners=False)
        return {"logits": fused, "aux": [small, medium]}
