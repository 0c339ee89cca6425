"""Temporal (3D) encoders of the whole clip: I3D, S3D and a tiny CPU encoder.

Each gives five stage maps over the clip at spatial strides 2..32 and temporal strides
(2, 2, 2, 4, 8); the model takes the temporal-centre slice of each as the target-frame feature.
"""

from __future__ import annotations

from torch import nn

from lvas.models.base import StagedEncoder, StageSpec, load_into, read_checkpoint, resolve_weights, torchvision_state
from lvas.models.backbones.i3d import I3D_CHANNELS, I3D_T_STRIDES, convert_i3d_state_dict, i3d_stages, to_staged_keys
from lvas.registry import TEMPORAL_ENCODERS

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def _specs(channels: list[int]) -> list[StageSpec]:
    return [StageSpec(c, 2**i, t) for i, (c, t) in enumerate(zip(channels, I3D_T_STRIDES), start=1)]


@TEMPORAL_ENCODERS.register("i3d")
class I3DEncoder(StagedEncoder):
    """I3D, Inception-v1 inflated (own implementation, TF-SAME padding; Kinetics-400 from a local file)."""

    is_3d = True
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the Kinetics checkpoints expect [-1, 1]

    def __init__(self, bn_eps: float = 1e-3, *, pretrained: str = "none") -> None:
        super().__init__()
        self.stages = i3d_stages(bn_eps)
        self.stage_specs = _specs(I3D_CHANNELS)
        path = resolve_weights(pretrained, {}, "i3d")
        if path is not None:
            load_into(self, to_staged_keys(convert_i3d_state_dict(read_checkpoint(path))), str(path))


@TEMPORAL_ENCODERS.register("i3d_released")
def i3d_released(*, pretrained: str = "none") -> I3DEncoder:
    """I3D as in the released CSTM code: BatchNorm eps 1e-5 (PyTorch's default) instead of 1e-3."""
    return I3DEncoder(bn_eps=1e-5, pretrained=pretrained)


@TEMPORAL_ENCODERS.register("s3d")
class S3DEncoder(StagedEncoder):
    """S3D (torchvision, Kinetics-400), its ``features`` only (the classifier cannot take 8x320x320)."""

    is_3d = True
    mean, std = KINETICS_MEAN, KINETICS_STD
    min_frames = 5  # its valid temporal pooling before Mixed_5b leaves no frame for fewer
    _SPLITS = [(0, 1), (1, 4), (4, 7), (7, 13), (13, 16)]

    def __init__(self, *, pretrained: str = "none") -> None:
        super().__init__()
        from torchvision.models.video import S3D_Weights, s3d  # imported here: 1.7 s saved where unused

        net = s3d(weights=None)
        weights = resolve_weights(pretrained, {"kinetics400": S3D_Weights.KINETICS400_V1}, "s3d")
        if isinstance(weights, str):
            load_into(net, read_checkpoint(weights), weights, ignore=("classifier.",))
        elif weights is not None:
            load_into(net, torchvision_state(weights, "s3d"), str(weights), ignore=("classifier.",))
        self.stages = nn.ModuleList(net.features[a:b] for a, b in self._SPLITS)
        self.stage_specs = _specs([64, 192, 480, 832, 1024])


def _conv_bn3d(cin: int, cout: int, stride: tuple[int, int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)
    )


@TEMPORAL_ENCODERS.register("tiny3d")
class Tiny3DEncoder(StagedEncoder):
    """CPU-sized 3D encoder for quick runs and tests (not a paper component; ~0.3 M parameters)."""

    is_3d = True
    mean, std = KINETICS_MEAN, KINETICS_STD

    def __init__(self, widths: tuple[int, ...] = (16, 24, 32, 48, 64), *, pretrained: str = "none") -> None:
        super().__init__()
        t_steps = [2, 1, 1, 2, 2]  # cumulative temporal strides 2, 2, 2, 4, 8 as I3D
        chans = [3, *widths]
        self.stages = nn.ModuleList(
            nn.Sequential(_conv_bn3d(chans[i], chans[i + 1], (t_steps[i], 2, 2)),
                          _conv_bn3d(chans[i + 1], chans[i + 1], (1, 1, 1)))
            for i in range(5)
        )
        self.stage_specs = _specs(list(widths))
        path = resolve_weights(pretrained, {}, "tiny3d")
        if path is not None:
            load_into(self, read_checkpoint(path), str(path))
