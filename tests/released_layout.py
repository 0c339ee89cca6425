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

    def mixed(self, prefix: str, name: str) -> None:
        """An Inception block (hassony2 branch names)."""
        cin, c = MIXED[name]
        self.unit3d(f"{prefix}.branch_0", cin, c[0], 1)
        self.unit3d(f"{prefix}.branch_1.0", cin, c[1], 1)
        self.unit3d(f"{prefix}.branch_1.1", c[1], c[2], 3)
        self.unit3d(f"{prefix}.branch_2.0", cin, c[3], 1)
        self.unit3d(f"{prefix}.branch_2.1", c[3], c[4], 3)
        self.unit3d(f"{prefix}.branch_3.1", cin, c[5], 1)


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
                w.mixed(p, name)
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


# --------------------------------------------------------------------------- LBDT (dzh19990407/LBDT)
# JointModel: conv1_{1,2}, bn1_{1,2}, res{2..5}_{1,2} (two torchvision ResNet-50s), text_encoder.lstm
# (LSTM 300 -> 512), conv_r{4,5}_{1,2}_{reduce,up} (1x1 conv no bias + BN, C <-> 512),
# transformer.stage{4,5}.layers.{0..3}: self_attn_words / cross_attn_img / cross_attn_flo
# (MultiheadAttention 512, 8 heads), linear1 / linear2 (512 -> 512), norm_words_1, norm_words_2,
# norm_flo, norm_flo2 (LayerNorm); decoder: refine_spa / refine_tem (4 x 3x3 conv C -> 128 no bias
# + BN), spa_tower / tem_tower / fuse_tower (4 x [3x3 conv no bias + BN] + 1x1 conv -> 1),
# fusion (img_flo_fc.0 Linear 256 -> 128, img_txt_fc / flo_txt_fc Linear 640 -> 128,
# img_enhance_fc / flo_enhance_fc Linear 128 -> 128, fusion_cat_conv 3x3 256 -> 128 no bias + BN),
# mask_head (3x3 conv 3 -> 1).

def _linear(w: _Writer, p: str, cin: int, cout: int) -> None:
    w.t(f"{p}.weight", cout, cin)
    w.t(f"{p}.bias", cout)


def _conv_bn(w: _Writer, p: str, cin: int, cout: int, k: int) -> None:
    w.t(f"{p}.0.weight", cout, cin, k, k)
    w.bn(f"{p}.1", cout)


def lbdt_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under every key of the released LBDT-4 JointModel."""
    w = _Writer(seed)
    torch.manual_seed(seed)
    stem = {"conv1.": "conv1_{}.", "bn1.": "bn1_{}.", "layer1.": "res2_{}.", "layer2.": "res3_{}.",
            "layer3.": "res4_{}.", "layer4.": "res5_{}."}
    for n in ("1", "2"):
        for k, v in torchvision.models.resnet50(weights=None).state_dict().items():
            for src, dst in stem.items():
                if k.startswith(src):
                    w.state[dst.format(n) + k[len(src):]] = v
        for s, c in (("4", 1024), ("5", 2048)):
            w.t(f"conv_r{s}_{n}_reduce.0.weight", 512, c, 1, 1)
            w.bn(f"conv_r{s}_{n}_reduce.1", 512)
            w.t(f"conv_r{s}_{n}_up.0.weight", c, 512, 1, 1)
            w.bn(f"conv_r{s}_{n}_up.1", c)
    for k, v in torch.nn.LSTM(300, 512, batch_first=True).state_dict().items():
        w.t(f"text_encoder.lstm.{k}", *v.shape)
    for s in ("4", "5"):
        for layer in range(4):
            p = f"transformer.stage{s}.layers.{layer}"
            for attn in ("self_attn_words", "cross_attn_img", "cross_attn_flo"):
                w.t(f"{p}.{attn}.in_proj_weight", 3 * 512, 512)
                w.t(f"{p}.{attn}.in_proj_bias", 3 * 512)
                _linear(w, f"{p}.{attn}.out_proj", 512, 512)
            _linear(w, f"{p}.linear1", 512, 512)
            _linear(w, f"{p}.linear2", 512, 512)
            for norm in ("norm_words_1", "norm_words_2", "norm_flo", "norm_flo2"):
                w.state[f"{p}.{norm}.weight"] = torch.rand(512, generator=w.g) + 0.5
                w.state[f"{p}.{norm}.bias"] = torch.randn(512, generator=w.g) * 0.1
    for j, c in enumerate([256, 512, 1024, 2048]):
        _conv_bn(w, f"decoder.refine_spa.{j}", c, 128, 3)
        _conv_bn(w, f"decoder.refine_tem.{j}", c, 128, 3)
    for tower in ("spa_tower", "tem_tower", "fuse_tower"):
        for j in range(4):
            _conv_bn(w, f"decoder.{tower}.{j}", 128, 128, 3)
        w.t(f"decoder.{tower}.4.weight", 1, 128, 1, 1)
        w.t(f"decoder.{tower}.4.bias", 1)
    _linear(w, "decoder.fusion.img_flo_fc.0", 256, 128)
    for name, cin in (("img_txt_fc", 640), ("flo_txt_fc", 640), ("img_enhance_fc", 128), ("flo_enhance_fc", 128)):
        _linear(w, f"decoder.fusion.{name}", cin, 128)
    _conv_bn(w, "decoder.fusion.fusion_cat_conv", 256, 128, 3)
    w.t("decoder.mask_head.weight", 1, 3, 3, 3)
    w.t("decoder.mask_head.bias", 1)
    return w.state


# --------------------------------------------------------------------------- ACGA (haowang1992/ACGA)
# ACGA: video_model.model = the whole hassony2 I3D (up to mixed_5c and conv3d_0c_1x1, 400 classes);
# txt_model.0 Conv1d(300, 300, 3); attention_layer: video_reduce Linear(840 -> 300),
# video_linear{K,Q,V} Linear(840 -> 840), txt_increase Linear(300 -> 840); deconv_small
# (ConvTranspose2d 832 -> 256, k 8; 3x3 256 -> 256), deconv_medium (256 -> 128 likewise);
# conv_mask_small / medium / large (3x3 C+308 -> 256/128/64, 3x3, 1x1 -> 1, at indices 0, 2, 4);
# conv_fusion (3x3 conv 3 -> 1).

def acga_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under every key of the released ACGA model."""
    w = _Writer(seed)
    i3d = "video_model.model"
    w.unit3d(f"{i3d}.conv3d_1a_7x7", 3, 64, 7)
    w.unit3d(f"{i3d}.conv3d_2b_1x1", 64, 64, 1)
    w.unit3d(f"{i3d}.conv3d_2c_3x3", 64, 192, 3)
    for name in MIXED:
        w.mixed(f"{i3d}.{name}", name)
    w.t(f"{i3d}.conv3d_0c_1x1.conv3d.weight", 400, 1024, 1, 1, 1)
    w.t(f"{i3d}.conv3d_0c_1x1.conv3d.bias", 400)
    w.t("txt_model.0.weight", 300, 300, 3)
    w.t("txt_model.0.bias", 300)
    _linear(w, "attention_layer.video_reduce", 840, 300)
    for name in ("video_linearK", "video_linearQ", "video_linearV"):
        _linear(w, f"attention_layer.{name}", 840, 840)
    _linear(w, "attention_layer.txt_increase", 300, 840)
    for name, cin, cout in (("deconv_small", 832, 256), ("deconv_medium", 256, 128)):
        w.t(f"{name}.0.weight", cin, cout, 8, 8)
        w.t(f"{name}.0.bias", cout)
        w.t(f"{name}.1.weight", cout, cout, 3, 3)
        w.t(f"{name}.1.bias", cout)
    for name, cin, width in (("conv_mask_small", 832 + 308, 256), ("conv_mask_medium", 256 + 308, 128),
                             ("conv_mask_large", 128 + 308, 64)):
        w.t(f"{name}.0.weight", width, cin, 3, 3)
        w.t(f"{name}.0.bias", width)
        w.t(f"{name}.2.weight", width, width, 3, 3)
        w.t(f"{name}.2.bias", width)
        w.t(f"{name}.4.weight", 1, width, 1, 1)
        w.t(f"{name}.4.bias", 1)
    w.t("conv_fusion.weight", 1, 3, 3, 3)
    w.t("conv_fusion.bias", 1)
    return w.state


# --------------------------------------------------------------------------- ReferFormer (wjn922/ReferFormer)
# ReferFormer (models/referformer.py), the A2D options (--with_box_refine --binary --masks):
#   backbone.0.body     torchvision ResNet-50 with FrozenBatchNorm2d (conv1, bn1, layer1..4; no fc), or the
#                       Video-Swin backbone: patch_embed.proj (C, 3, 1, 4, 4) + .norm, layers.{i}.blocks.{j}
#                       (norm1, attn.relative_position_bias_table (15*13*13, heads), attn.relative_position_index
#                       (392, 392), attn.qkv, attn.proj, norm2, mlp.fc1 (4C), mlp.fc2), downsamples.{0,1,2}
#                       (reduction 4C -> 2C no bias, norm 4C)
#   text_encoder        Hugging Face RobertaModel (its own keys; older transformers also saved
#                       embeddings.position_ids); resizer.fc (768 -> 256) + resizer.layer_norm
#   input_proj.{0,1,2}  1x1 conv C_l -> 256 + GroupNorm; input_proj.3 3x3 stride-2 conv C_5 -> 256 + GroupNorm
#   fusion_module.multihead_attn (256, 8 heads)
#   transformer         level_embed (4, 256); encoder.layers.{0..3}: self_attn (MSDeformAttn: sampling_offsets
#                       256 -> 8*4*4*2, attention_weights 256 -> 8*4*4, value_proj, output_proj), norm1,
#                       linear1 (256 -> 2048), linear2, norm2; decoder.layers.{0..3}: cross_attn (MSDeformAttn),
#                       norm1, self_attn (MultiheadAttention), norm2, linear1, linear2, norm3; reference_points
#                       (256 -> 2); decoder.bbox_embed (the box heads registered a second time)
#   class_embed.{0..3} (256 -> 1), bbox_embed.{0..3}.layers.{0,1,2} (256 -> 256 -> 256 -> 4), query_embed (5, 256)
#   pixel_decoder       adapter_{1..4} (1x1 conv C -> 256 no bias + norm GroupNorm), layer_{1..4} (3x3 conv no
#                       bias + norm), mask_features (3x3 conv 256 -> 256), cross_attn_{1..4}: self_attn,
#                       multihead_attn (MultiheadAttention), linear1 (256 -> 2048), linear2, norm1..3
#   controller.layers.{0,1,2}   256 -> 256 -> 256 -> 2153 (the dynamic mask network: (256+2)*8 + 8*8 + 8
#                       weights and 8 + 8 + 1 biases)

SWIN = {"t": (96, [2, 2, 6, 2], [3, 6, 12, 24]), "b": (128, [2, 2, 18, 2], [4, 8, 16, 32])}


def _mha(w: _Writer, p: str, d: int) -> None:
    w.t(f"{p}.in_proj_weight", 3 * d, d)
    w.t(f"{p}.in_proj_bias", 3 * d)
    _linear(w, f"{p}.out_proj", d, d)


def _norm(w: _Writer, p: str, c: int) -> None:
    w.state[f"{p}.weight"] = torch.rand(c, generator=w.g) + 0.5
    w.state[f"{p}.bias"] = torch.randn(c, generator=w.g) * 0.1


def _swin(w: _Writer, variant: str) -> list[int]:
    dim, depths, heads = SWIN[variant]
    p = "backbone.0.body"
    w.t(f"{p}.patch_embed.proj.weight", dim, 3, 1, 4, 4)
    w.t(f"{p}.patch_embed.proj.bias", dim)
    _norm(w, f"{p}.patch_embed.norm", dim)
    index = torch.randint(0, 15 * 13 * 13, (392, 392), generator=w.g)
    for i, (depth, h) in enumerate(zip(depths, heads)):
        c = dim * 2**i
        for j in range(depth):
            b = f"{p}.layers.{i}.blocks.{j}"
            _norm(w, f"{b}.norm1", c)
            w.t(f"{b}.attn.relative_position_bias_table", 15 * 13 * 13, h)
            w.state[f"{b}.attn.relative_position_index"] = index.clone()
            _linear(w, f"{b}.attn.qkv", c, 3 * c)
            _linear(w, f"{b}.attn.proj", c, c)
            _norm(w, f"{b}.norm2", c)
            _linear(w, f"{b}.mlp.fc1", c, 4 * c)
            _linear(w, f"{b}.mlp.fc2", 4 * c, c)
        if i < 3:
            w.t(f"{p}.downsamples.{i}.reduction.weight", 2 * c, 4 * c)
            _norm(w, f"{p}.downsamples.{i}.norm", 4 * c)
    return [dim * 2**i for i in range(4)]


def referformer_state_dict(backbone: str, roberta: dict[str, torch.Tensor], seed: int = 0,
                           position_ids: bool = True) -> dict[str, torch.Tensor]:
    """Random weights under every key of the released ReferFormer (A2D options) with ``backbone``
    ``r50``, ``swin_t`` or ``swin_b``; ``roberta``: the state dict of the text model it was built with."""
    w = _Writer(seed)
    if backbone == "r50":
        torch.manual_seed(seed)
        net = torchvision.models.resnet50(weights=None, norm_layer=torchvision.ops.FrozenBatchNorm2d)
        for k, v in net.state_dict().items():
            if not k.startswith("fc."):
                w.state[f"backbone.0.body.{k}"] = v
        channels = [256, 512, 1024, 2048]
    else:
        channels = _swin(w, backbone.removeprefix("swin_"))
    for k, v in roberta.items():
        w.state[f"text_encoder.{k}"] = v.clone()
    if position_ids:
        w.state["text_encoder.embeddings.position_ids"] = torch.arange(514)[None]
    hidden = roberta["embeddings.word_embeddings.weight"].shape[1]
    _linear(w, "resizer.fc", hidden, 256)
    _norm(w, "resizer.layer_norm", 256)
    for i, c in enumerate(channels[1:]):
        w.t(f"input_proj.{i}.0.weight", 256, c, 1, 1)
        w.t(f"input_proj.{i}.0.bias", 256)
        _norm(w, f"input_proj.{i}.1", 256)
    w.t("input_proj.3.0.weight", 256, channels[-1], 3, 3)
    w.t("input_proj.3.0.bias", 256)
    _norm(w, "input_proj.3.1", 256)
    _mha(w, "fusion_module.multihead_attn", 256)
    w.t("transformer.level_embed", 4, 256)
    for kind in ("encoder", "decoder"):
        for i in range(4):
            p = f"transformer.{kind}.layers.{i}"
            attn = "self_attn" if kind == "encoder" else "cross_attn"
            _linear(w, f"{p}.{attn}.sampling_offsets", 256, 256)
            _linear(w, f"{p}.{attn}.attention_weights", 256, 128)
            _linear(w, f"{p}.{attn}.value_proj", 256, 256)
            _linear(w, f"{p}.{attn}.output_proj", 256, 256)
            _norm(w, f"{p}.norm1", 256)
            _linear(w, f"{p}.linear1", 256, 2048)
            _linear(w, f"{p}.linear2", 2048, 256)
            _norm(w, f"{p}.norm2", 256)
            if kind == "decoder":
                _mha(w, f"{p}.self_attn", 256)
                _norm(w, f"{p}.norm3", 256)
    _linear(w, "transformer.reference_points", 256, 2)
    for i in range(4):
        _linear(w, f"class_embed.{i}", 256, 1)
        for j, (a, b) in enumerate(((256, 256), (256, 256), (256, 4))):
            _linear(w, f"bbox_embed.{i}.layers.{j}", a, b)
            w.state[f"transformer.decoder.bbox_embed.{i}.layers.{j}.weight"] = w.state[f"bbox_embed.{i}.layers.{j}.weight"]
            w.state[f"transformer.decoder.bbox_embed.{i}.layers.{j}.bias"] = w.state[f"bbox_embed.{i}.layers.{j}.bias"]
    w.t("query_embed.weight", 5, 256)
    for i, c in enumerate([channels[0], 256, 256, 256], start=1):
        p = "pixel_decoder"
        w.t(f"{p}.adapter_{i}.weight", 256, c, 1, 1)
        _norm(w, f"{p}.adapter_{i}.norm", 256)
        w.t(f"{p}.layer_{i}.weight", 256, 256, 3, 3)
        _norm(w, f"{p}.layer_{i}.norm", 256)
        _mha(w, f"{p}.cross_attn_{i}.self_attn", 256)
        _mha(w, f"{p}.cross_attn_{i}.multihead_attn", 256)
        _linear(w, f"{p}.cross_attn_{i}.linear1", 256, 2048)
        _linear(w, f"{p}.cross_attn_{i}.linear2", 2048, 256)
        for n in (1, 2, 3):
            _norm(w, f"{p}.cross_attn_{i}.norm{n}", 256)
    w.t("pixel_decoder.mask_features.weight", 256, 256, 3, 3)
    w.t("pixel_decoder.mask_features.bias", 256)
    for j, (a, b) in enumerate(((256, 256), (256, 256), (256, 2153))):
        _linear(w, f"controller.layers.{j}", a, b)
    return w.state
