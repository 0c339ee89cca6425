"""Spatial (2D) encoders of the target frame: ResNet-50, Inception-v3 and a tiny CPU encoder.

Each gives five stage maps at strides 2, 4, 8, 16, 32 (``StagedEncoder`` contract).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from torch import nn

from lvas.models.base import StagedEncoder, StageSpec, load_into, read_checkpoint, resolve_weights, torchvision_state
from lvas.registry import SPATIAL_ENCODERS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _load_torchvision(model: nn.Module, pretrained: str, named: dict, family: str, ignore: tuple[str, ...]) -> None:
    weights = resolve_weights(pretrained, named, family)
    if weights is None:
        return
    if isinstance(weights, str):
        load_into(model, read_checkpoint(weights), weights, ignore=ignore)
    else:  # a torchvision WeightsEnum: read from the torch hub cache, downloading if absent
        load_into(model, torchvision_state(weights, family), str(weights), ignore=ignore)


@SPATIAL_ENCODERS.register("r50")
class ResNet50Encoder(StagedEncoder):
    """ResNet-50 (torchvision, ImageNet): conv1 | layer1 | layer2 | layer3 | layer4.

    ``pretrained: imagenet`` is torchvision's IMAGENET1K_V2; ``imagenet_v1`` the V1 weights the
    released CSTM code starts from. ``norm: frozen`` uses torchvision's FrozenBatchNorm2d (fixed
    statistics and affine parameters, eps 1e-5), as DETR-style models (ReferFormer) do.
    """

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, *, pretrained: str = "none", norm: Literal["batch", "frozen"] = "batch") -> None:
        super().__init__()
        from torchvision.models import ResNet50_Weights, resnet50  # imported here: 1.7 s saved where unused
        from torchvision.ops import FrozenBatchNorm2d

        net = resnet50(weights=None, norm_layer=FrozenBatchNorm2d if norm == "frozen" else None)
        _load_torchvision(net, pretrained, {"imagenet": ResNet50_Weights.IMAGENET1K_V2,
                                            "imagenet_v1": ResNet50_Weights.IMAGENET1K_V1}, "r50", ignore=("fc.",))
        self.stages = nn.ModuleList([
            nn.Sequential(OrderedDict(conv1=net.conv1, bn1=net.bn1, relu=net.relu)),
            nn.Sequential(OrderedDict(maxpool=net.maxpool, layer1=net.layer1)),
            net.layer2,
            net.layer3,
            net.layer4,
        ])
        self.stage_specs = [StageSpec(c, 2**i) for i, c in enumerate([64, 256, 512, 1024, 2048], start=1)]


_IV3_STAGES = [
    ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"],
    ["maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3"],
    ["maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d"],
    ["Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"],
    ["Mixed_7a", "Mixed_7b", "Mixed_7c"],
]


@SPATIAL_ENCODERS.register("iv3")
class InceptionV3Encoder(StagedEncoder):
    """Inception-v3 (torchvision, ImageNet), valid padding aligned to the stride-2^i grid.

    Its valid convolutions shrink every map (a 320 px input gives 157 px after stage 1);
    ``align`` resizes each stage output (bilinear) to the stride-2^i grid (160/80/40/20/10)
    before CMAM and the next stage see it, so CMAM, coordinates and decoder work on the same grid
    as for any other encoder (this is also what Table 4's spatial cost implies). Needs an input
    of at least 75 px.
    """

    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # Google's weights expect [-1, 1]
    min_input = 75

    def __init__(self, *, pretrained: str = "none") -> None:
        super().__init__()
        from torchvision.models import Inception_V3_Weights, inception_v3

        net = inception_v3(weights=None, aux_logits=True, init_weights=True, transform_input=False)
        _load_torchvision(net, pretrained, {"imagenet": Inception_V3_Weights.IMAGENET1K_V1}, "iv3",
                          ignore=("fc.", "AuxLogits."))
        self.stages = nn.ModuleList(
            nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names)) for names in _IV3_STAGES
        )
        self.stage_specs = [StageSpec(c, 2**i) for i, c in enumerate([64, 192, 288, 768, 2048], start=1)]


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@SPATIAL_ENCODERS.register("tiny2d")
class Tiny2DEncoder(StagedEncoder):
    """CPU-sized 2D encoder for quick runs and tests (not a paper component; ~0.1 M parameters)."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, widths: tuple[int, ...] = (16, 24, 32, 48, 64), *, pretrained: str = "none") -> None:
        super().__init__()
        load_path = resolve_weights(pretrained, {}, "tiny2d")
        chans = [3, *widths]
        self.stages = nn.ModuleList(
            nn.Sequential(_conv_bn(chans[i], chans[i + 1], 2), _conv_bn(chans[i + 1], chans[i + 1], 1))
            for i in range(5)
        )
        self.stage_specs = [StageSpec(c, 2**i) for i, c in enumerate(widths, start=1)]
        if load_path is not None:
            load_into(self, read_checkpoint(load_path), str(load_path))
