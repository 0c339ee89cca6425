"""ACGA's visual stream (Wang et al., ICCV 2019).

* ``i3d_mixed4f`` -- Kinetics I3D up to Mixed_4f (stride 16, 832 channels), averaged over time
  (``temporal_reduce = "mean"``); the release trains Mixed_4f only
  (``model.temporal.trainable: [stages.3.Mixed_4f.]``) and uses PyTorch's BatchNorm eps 1e-5;
* ``tiny3d_s16`` -- the CPU-sized stand-in: the tiny 3D encoder to stride 16, averaged over time.
"""

from __future__ import annotations

from lvas.models.base import StagedEncoder
from lvas.models.backbones.temporal import I3DEncoder, Tiny3DEncoder
from lvas.registry import TEMPORAL_ENCODERS


@TEMPORAL_ENCODERS.register("i3d_mixed4f")
def i3d_mixed4f(*, pretrained: str = "none") -> I3DEncoder:
    """I3D up to Mixed_4f, averaged over time (ACGA's video encoder; BatchNorm eps 1e-5 as its release)."""
    enc = I3DEncoder(bn_eps=1e-5, pretrained=pretrained)
    enc.stages = enc.stages[:4]
    enc.stage_specs = enc.stage_specs[:4]
    enc.temporal_reduce = "mean"
    return enc


@TEMPORAL_ENCODERS.register("tiny3d_s16")
def tiny3d_s16(*, pretrained: str = "none") -> StagedEncoder:
    """The CPU-sized 3D encoder stopped at stride 16 and averaged over time (an ACGA stand-in; not a paper component)."""
    enc = Tiny3DEncoder(pretrained=pretrained)
    enc.stages = enc.stages[:4]
    enc.stage_specs = enc.stage_specs[:4]
    enc.temporal_reduce = "mean"
    return enc
