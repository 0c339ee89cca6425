"""State dicts written in the released CSTM checkpoint layout (RyanHTR/CSTM ``CSTMModel``), from a
description of its modules — key names and shapes only, no code of the release.

    t_layer1..5      the I3D (hassony2 names: conv3d_1a_7x7 .conv3d/.batch3d, mixed_3b.branch_*)
    s_layer1..5      torchvision ResNet-50 (conv1+bn1 | maxpool+layer1 | layer2 | layer3 | layer4)
    txt_encoder      GRU(300 -> C_L, no bias); txt_norm.0 LayerNorm(C_L)
    cmam_s / cmam_t  per stage: vt (3x3 / 3x3x3 conv on C+8 -> C, BN), v_key (1x1 conv -> C_L, BN),
                     l_query (Conv1d C_L -> C_L no bias, BN1d), gamma.0 Linear(C_L -> C)
    ires_trans / vres_trans  per stage 3x3 conv C -> D (no bias) + BN
    conv_fuse1 (5) / conv_fuse2 (4)  3x3 conv 2D -> D (bias) + BN
    conv_mask (6)    3x3 D->D, 3x3 D->D, 1x1 D->1 (all with bias) at Sequential indices 0, 2, 4
"""

from __future__ import annotations

import torch
import torchvision

IMAGE_DIMS = [64, 256, 512, 1024, 2048]
VIDEO_DIMS = [64, 192, 480, 832, 1024]
MIXED = {  # in-channels, (b0, b1a, b1b, b2a, b2b, b3b)
    "mixed_3b": (192, (64, 96, 128, 16, 32, 32)), "mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "mixed_4b": (480, (192, 96, 208, 16, 48, 64)), "mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "mixed_4d": (512, (128, 128, 256, 24, 64, 64)), "mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "mixed_4f": (528, (256, 160, 320, 32, 128, 128)), "mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
T_LAYERS = {1: ["conv3d_1a_7x7"], 2: [None, "conv3d_2b_1x1", "conv3d_2c_3x3"], 3: [None, "mixed_3b", "mixed_3c"],
            4: [None, "mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e", "mixed_4f"], 5: [None, "mixed_5b", "mixed_5c"]}


class _Writer:
    def __init__(self, seed: int) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.state: dict[str, torch.Tensor] = {}

    def t(self, key: str, *shape: int) -> None:
        self.state[key] = torch.randn(*shape, generator=self.g) * 0.05

    def bn(self, prefix: str, c: int) -> None:
        self.state[f"{prefix}.weight"] = torch.rand(c, generator=self.g) + 0.5
        self.state[f"{prefix}.bias"] = torch.randn(c, generator=self.g) * 0.1
        self.state[f"{prefix}.running_mean"] = torch.randn(c, generator=self.g) * 0.1
        self.state[f"{prefix}.running_var"] = torch.rand(c, generator=self.g) + 0.5
        self.state[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)

    def unit3d(self, prefix: str, cin: int, cout: int, k: int) -> None:
        self.t(f"{prefix}.conv3d.weight", cout, cin, k, k, k)
        self.bn(f"{prefix}.batch3d", cout)


def released_state_dict(dim: int = 512, dec: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under every key of the released model, with C_L = ``dim`` and D = ``dec``."""
    w = _Writer(seed)
    for stage, names in T_LAYERS.items():
        for i, name in enumerate(names):
            p = f"t_layer{stage}.{i}"
            if name is None:
                continue  # a max-pool
            if name == "conv3d_1a_7x7":
                w.unit3d(p, 3, 64, 7)
            elif name == "conv3d_2b_1x1":
                w.unit3d(p, 64, 64, 1)
            elif name == "conv3d_2c_3x3":
                w.unit3d(p, 64, 192, 3)
            else:
                cin, c = MIXED[name]
                w.unit3d(f"{p}.branch_0", cin, c[0], 1)
                w.unit3d(f"{p}.branch_1.0", cin, c[1], 1)
                w.unit3d(f"{p}.branch_1.1", c[1], c[2], 3)
                w.unit3d(f"{p}.branch_2.0", cin, c[3], 1)
                w.unit3d(f"{p}.branch_2.1", c[3], c[4], 3)
                w.unit3d(f"{p}.branch_3.1", cin, c[5], 1)
    rename = {"conv1.": "s_layer1.0.", "bn1.": "s_layer1.1.", "layer1.": "s_layer2.1.", "layer2.": "s_layer3.",
              "layer3.": "s_layer4.", "layer4.": "s_layer5."}
    torch.manual_seed(seed)
    for k, v in torchvision.models.resnet50(weights=None).state_dict().items():  # its own random init
        for src, dst in rename.items():
            if k.startswith(src):
                w.state[dst + k[len(src):]] = v
    for k, v in torch.nn.GRU(300, dim, bias=False, batch_first=True).state_dict().items():
        w.t(f"txt_encoder.{k}", *v.shape)
    w.state["txt_norm.0.weight"] = torch.ones(dim)
    w.state["txt_norm.0.bias"] = torch.zeros(dim)
    for i in range(5):
        for kind, dims, conv, bn, kshape in (("s", IMAGE_DIMS, "conv", "bn", (3, 3)),
                                             ("t", VIDEO_DIMS, "conv3d", "batch3d", (3, 3, 3))):
            c, p = dims[i], f"cmam_{kind}.{i}"
            w.t(f"{p}.vt.{conv}.weight", c, c + 8, *kshape)
            w.bn(f"{p}.vt.{bn}", c)
            w.t(f"{p}.v_key.{conv}.weight", dim, c, *([1] * len(kshape)))
            w.bn(f"{p}.v_key.{bn}", dim)
            w.t(f"{p}.l_query.0.weight", dim, dim, 1)
            w.bn(f"{p}.l_query.1", dim)
            w.t(f"{p}.gamma.0.weight", c, dim)
            w.t(f"{p}.gamma.0.bias", c)
        for name, dims in (("ires_trans", IMAGE_DIMS), ("vres_trans", VIDEO_DIMS)):
            w.t(f"{name}.{i}.0.weight", dec, dims[i], 3, 3)
            w.bn(f"{name}.{i}.1", dec)
        w.t(f"conv_fuse1.{i}.0.weight", dec, 2 * dec, 3, 3)
        w.t(f"conv_fuse1.{i}.0.bias", dec)
        w.bn(f"conv_fuse1.{i}.1", dec)
        if i < 4:
            w.t(f"conv_fuse2.{i}.0.weight", dec, 2 * dec, 3, 3)
            w.t(f"conv_fuse2.{i}.0.bias", dec)
            w.bn(f"conv_fuse2.{i}.1", dec)
    for i in range(6):
        w.t(f"conv_mask.{i}.0.weight", dec, dec, 3, 3)
        w.t(f"conv_mask.{i}.0.bias", dec)
        w.t(f"conv_mask.{i}.2.weight", dec, dec, 3, 3)
        w.t(f"conv_mask.{i}.2.bias", dec)
        w.t(f"conv_mask.{i}.4.weight", 1, dec, 1, 1)
        w.t(f"conv_mask.{i}.4.bias", 1)
    return w.state
