"""Video Swin Transformer (Liu et al., CVPR 2022) as ReferFormer and MTTR use it: torchvision's
``SwinTransformer3d`` with a (1, 4, 4) patch (no temporal downsampling, a map per frame), window
(8, 7, 7), and the maps of its four stages *before* each patch merging.

torchvision's blocks compute what the original Video-Swin code (and ReferFormer's copy of it)
computes: loaded with the same weights they give the same stage maps, difference 0
(``benchmarks/oracle_released_referformer.py``). Stages, in lvas's five-stage contract:

    stage 1  patch embedding (3 -> C), stride 4           stage 2  Swin stage 1 (C), stride 4
    stage 3  merge + Swin stage 2 (2C), stride 8          stage 4  merge + Swin stage 3 (4C), stride 16
    stage 5  merge + Swin stage 4 (8C), stride 32

(C = 96 for T and S, 128 for B; depths 2-2-6-2 for T, 2-2-18-2 for S and B). Maps are (B, C, T, H, W);
inside, torchvision works channels-last. ``pretrained``: a Kinetics-400 checkpoint of the original
Video-Swin repository (``{"state_dict": {"backbone.patch_embed...": ...}}``, its (2, 4, 4) patch
kernel summed over time as ReferFormer does), or ``none``.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from lvas.models.base import StagedEncoder, StageSpec, load_into, read_checkpoint, resolve_weights
from lvas.registry import TEMPORAL_ENCODERS
from lvas.settings import NonNegativeFloat

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # ReferFormer normalises every frame with ImageNet's statistics
IMAGENET_STD = (0.229, 0.224, 0.225)
VARIANTS = {"t": (96, [2, 2, 6, 2], [3, 6, 12, 24]), "s": (96, [2, 2, 18, 2], [3, 6, 12, 24]),
            "b": (128, [2, 2, 18, 2], [4, 8, 16, 32]),
            "mini": (24, [1, 1, 1, 1], [1, 2, 3, 6])}  # CPU-sized, not a paper component


def original_key(key: str) -> str:
    """A key of the original Video-Swin backbone (and of ReferFormer's ``backbone.0.body``) -> ours."""
    m = re.fullmatch(r"layers\.(\d)\.blocks\.(\d+)\.(.*)", key)
    if m:
        i, rest = int(m[1]), m[3].replace("mlp.fc1.", "mlp.0.").replace("mlp.fc2.", "mlp.3.")
        return f"stages.1.body.{m[2]}.{rest}" if i == 0 else f"stages.{i + 1}.body.1.{m[2]}.{rest}"
    m = re.fullmatch(r"downsamples\.(\d)\.(.*)", key) or re.fullmatch(r"layers\.(\d)\.downsample\.(.*)", key)
    if m:
        return f"stages.{int(m[1]) + 2}.body.0.{m[2]}"
    if key.startswith("patch_embed."):
        return "stages.0.body." + key.removeprefix("patch_embed.")
    raise KeyError(key)


class VideoSwinEncoder(StagedEncoder):
    """Video Swin (torchvision blocks, patch (1, 4, 4), window (8, 7, 7)), four stage taps + the patch embedding."""

    is_3d = True
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, variant: str = "t", *, pretrained: str = "none", drop_path: NonNegativeFloat = 0.2) -> None:
        super().__init__()
        from torchvision.models.video.swin_transformer import SwinTransformer3d

        dim, depths, heads = VARIANTS[variant]
        swin = SwinTransformer3d(patch_size=[1, 4, 4], embed_dim=dim, depths=depths, num_heads=heads,
                                 window_size=[8, 7, 7], stochastic_depth_prob=drop_path)
        f = swin.features  # its final norm and classifier are not used
        self.stages = nn.ModuleList([_ChannelsFirst(swin.patch_embed, embed=True), _ChannelsFirst(f[0]),
                                     _ChannelsFirst(nn.Sequential(f[1], f[2])), _ChannelsFirst(nn.Sequential(f[3], f[4])),
                                     _ChannelsFirst(nn.Sequential(f[5], f[6]))])
        self.stage_specs = [StageSpec(dim, 4), StageSpec(dim, 4), StageSpec(2 * dim, 8), StageSpec(4 * dim, 16),
                            StageSpec(8 * dim, 32)]
        path = resolve_weights(pretrained, {}, f"video_swin_{variant}")
        if path is not None:
            load_into(self, kinetics_state(read_checkpoint(path)), str(path))


class _ChannelsFirst(nn.Module):
    """A torchvision Swin stage on lvas's (B, C, T, H, W) maps (it works on (B, T, H, W, C))."""

    def __init__(self, body: nn.Module, embed: bool = False) -> None:
        super().__init__()
        self.body, self.embed = body, embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x if self.embed else x.permute(0, 2, 3, 4, 1))
        return y.permute(0, 4, 1, 2, 3)


def kinetics_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An original Video-Swin checkpoint (``backbone.*`` keys; the classifier and final norm dropped)
    in our keys; a (2, 4, 4) patch kernel is summed over time to (1, 4, 4), as ReferFormer loads it."""
    body = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")} or dict(state)
    body = {k: v for k, v in body.items() if not k.startswith(("norm.", "cls_head.", "head."))}
    w = body.get("patch_embed.proj.weight")
    if w is not None and w.shape[2] != 1:
        body["patch_embed.proj.weight"] = w.sum(dim=2, keepdim=True)
    return {original_key(k): v for k, v in body.items()}


def _register(variant: str):
    def build(*, pretrained: str = "none", drop_path: NonNegativeFloat = 0.2) -> VideoSwinEncoder:
        return VideoSwinEncoder(variant, pretrained=pretrained, drop_path=drop_path)

    build.__name__ = f"video_swin_{variant}"
    build.__qualname__ = build.__name__
    build.__doc__ = (f"Video Swin-{variant.upper()} (torchvision blocks, patch (1, 4, 4), window (8, 7, 7)), as in "
                     f"ReferFormer; stage maps before each merging, strides 4-32." if variant != "mini" else
                     "A CPU-sized Video Swin (C = 24, one block per stage; not a paper component), for quick runs.")
    return TEMPORAL_ENCODERS.register(build.__name__)(build)


video_swin_t = _register("t")
video_swin_s = _register("s")
video_swin_b = _register("b")
video_swin_mini = _register("mini")
