"""ReferFormer's cross-modal FPN (Wu et al., CVPR 2022, §3.4): the mask features at stride 4.

Top-down over the levels at strides 32, 16, 8 (the transformer encoder's memory) and 4 (the
backbone's first map): per level a 1x1 lateral conv (GroupNorm), a :class:`VisionLanguageBlock`
(the clip's pixels attend to each other -- spatially reduced by 1, 2, 4, 8 from coarse to fine --
and then to the words), the nearest-upsampled coarser result added, a 3x3 conv (GroupNorm, ReLU);
a last 3x3 conv gives ``mask_dim`` channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lvas.models.cross_modal.vision_language import VisionLanguageBlock
from lvas.models.transformers.position import sine_1d


def c2_xavier_fill(module: nn.Conv2d) -> None:
    """Caffe2's XavierFill (detectron2 / fvcore ``c2_xavier_fill``): kaiming_uniform_ with a = 1, zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


class NormConv2d(nn.Conv2d):
    """A Conv2d followed by its own norm (``.norm``) and activation (detectron2's ``Conv2d``)."""

    def __init__(self, *args, norm: nn.Module | None = None, activation=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.norm is not None:
            x = self.norm(x)
        return self.activation(x) if self.activation is not None else x


class CrossModalFPN(nn.Module):
    """The mask-feature pyramid (see the module docstring).

    Args:
        feature_channels: channels of the stride-4 backbone map and of the three coarser levels.
        conv_dim: D, the width of every level (ReferFormer: the transformer's 256).
        mask_dim: channels of the mask features.
        d_ffn: width of the blocks' feed-forward layers.
        heads: attention heads.
    """

    def __init__(self, feature_channels: list[int], conv_dim: int, mask_dim: int, d_ffn: int = 2048,
                 heads: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv_dim = conv_dim
        for idx, cin in enumerate(feature_channels):  # res2 -> res5
            lateral = NormConv2d(cin, conv_dim, kernel_size=1, bias=False, norm=nn.GroupNorm(8, conv_dim))
            output = NormConv2d(conv_dim, conv_dim, kernel_size=3, padding=1, bias=False,
                                norm=nn.GroupNorm(8, conv_dim), activation=F.relu)
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
        self.mask_features = NormConv2d(conv_dim, mask_dim, kernel_size=3, padding=1)
        c2_xavier_fill(self.mask_features)
        for idx, sr in enumerate((8, 4, 2, 1)[:len(feature_channels)]):
            block = VisionLanguageBlock(conv_dim, heads, d_ffn, dropout, sr_ratio=sr)
            for p in block.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            self.add_module(f"cross_attn_{idx + 1}", block)
        self.levels = len(feature_channels)

    def _level(self, idx: int, x: torch.Tensor, pad: torch.Tensor, pos: torch.Tensor, words: torch.Tensor,
               word_pad: torch.Tensor, word_pos: torch.Tensor, t: int) -> torch.Tensor:
        n, _, h, w = pos.shape
        b = n // t
        v = getattr(self, f"adapter_{idx + 1}")(x)
        v = rearrange(v, "(b t) c h w -> (t h w) b c", b=b, t=t)
        vpos = rearrange(pos, "(b t) c h w -> (t h w) b c", b=b, t=t)
        vpad = rearrange(pad, "(b t) h w -> b (t h w)", b=b, t=t)
        out = getattr(self, f"cross_attn_{idx + 1}")(v, words, t=t, h=h, w=w, tgt_pad=vpad, memory_pad=word_pad,
                                                     pos=word_pos, query_pos=vpos)
        return rearrange(out, "(t h w) b c -> (b t) c h w", t=t, h=h, w=w)

    def forward(self, features: list[torch.Tensor], pads: list[torch.Tensor], poses: list[torch.Tensor],
                memory: list[torch.Tensor], words: torch.Tensor, word_pad: torch.Tensor, t: int) -> torch.Tensor:
        """
        Args:
            features, pads, poses: per backbone level from stride 4 to 32: (N, C_l, H_l, W_l), (N, H_l, W_l)
                padding, (N, D, H_l, W_l) positions; N = clips x frames.
            memory: the encoder's maps at strides 8, 16, 32, (N, D, H_l, W_l).
            words: (B, N_w, D); word_pad: (B, N_w) True on padding.
            t: frames per clip.

        Returns:
            (N, mask_dim, H/4, W/4) mask features.
        """
        word_pos = sine_1d(word_pad, self.conv_dim, dtype=words.dtype).permute(2, 0, 1)  # (N_w, B, D)
        words = words.permute(1, 0, 2)
        y = None
        for idx in range(self.levels - 1, 0, -1):  # stride 32 -> 8: the encoder's memory
            cur = self._level(idx, memory[idx - 1], pads[idx], poses[idx], words, word_pad, word_pos, t)
            y = cur if y is None else cur + F.interpolate(y, size=cur.shape[-2:], mode="nearest")
            y = getattr(self, f"layer_{idx + 1}")(y)
        cur = self._level(0, features[0], pads[0], poses[0], words, word_pad, word_pos, t)  # stride 4: the backbone
        y = cur + F.interpolate(y, size=cur.shape[-2:], mode="nearest")
        return self.mask_features(getattr(self, "layer_1")(y))
