"""The released ACGA checkpoint layout (haowang1992/ACGA ``model/acga.py``, ``ACGA``) mapped onto lvas:
``experiments/acga_paper.yaml`` builds the same network from registered parts.

    video_model.model.<hassony2 I3D name>   temporal.stages.{0..3}.<piergiaj name> (up to Mixed_4f)
    txt_model.0                             text.conv
    attention_layer.video_reduce / video_linear{K,Q,V} / txt_increase
                                            decoder.attention.reduce / key, query, value / gate
    conv_mask_{small,medium,large}          decoder.head_{small,medium,large}
    deconv_{small,medium} / conv_fusion     decoder.deconv_{small,medium} / decoder.fuse

Left out on purpose: the I3D layers after Mixed_4f (``maxPool3d_5a_2x2``, ``mixed_5b``, ``mixed_5c``,
``conv3d_0c_1x1``) — the release keeps the whole Kinetics network but its forward stops at
Mixed_4f; and ``text.embedding.weight`` is ours alone (the release reads word vectors from HDF5).
"""

from __future__ import annotations

from lvas.models.backbones.i3d import convert_i3d_state_dict, to_staged_keys
from lvas.models.layouts.base import Layout, rename
from lvas.registry import LAYOUTS

UNUSED_I3D = ("mixed_5b.", "mixed_5c.", "conv3d_0c_1x1.")
RULES = [(r"txt_model\.0\.(.+)", "text.conv.{}"),
         (r"attention_layer\.video_reduce\.(.+)", "decoder.attention.reduce.{}"),
         (r"attention_layer\.video_linearK\.(.+)", "decoder.attention.key.{}"),
         (r"attention_layer\.video_linearQ\.(.+)", "decoder.attention.query.{}"),
         (r"attention_layer\.video_linearV\.(.+)", "decoder.attention.value.{}"),
         (r"attention_layer\.txt_increase\.(.+)", "decoder.attention.gate.{}"),
         (r"conv_mask_(small|medium|large)\.(.+)", "decoder.head_{}.{}"),
         (r"deconv_(small|medium)\.(.+)", "decoder.deconv_{}.{}"),
         (r"conv_fusion\.(.+)", "decoder.fuse.{}")]


def is_released_acga(state: dict) -> bool:
    """True for a state dict in the released ACGA layout."""
    return any(k.startswith("attention_layer.video_reduce.") for k in state)


def convert_acga_state_dict(state: dict) -> dict:
    """Released ACGA keys -> lvas keys (I3D renamed through the hassony2 -> piergiaj mapping)."""
    video = {k.removeprefix("video_model.model."): v for k, v in state.items() if k.startswith("video_model.model.")}
    rest = {k: v for k, v in state.items() if not k.startswith("video_model.model.")}
    kept = {k: v for k, v in video.items() if not k.startswith(UNUSED_I3D)}
    if not kept:
        raise ValueError("released ACGA checkpoint: no video_model.model.* (I3D) keys")
    out = {f"temporal.{k}": v for k, v in to_staged_keys(convert_i3d_state_dict(kept)).items()}
    return {**out, **rename(rest, RULES, what="released ACGA")}


LAYOUTS.register("acga", "haowang1992/ACGA model/acga.py (ACGA)")(
    Layout("ACGA", is_released_acga, convert_acga_state_dict, ("text.embedding.weight",), "experiments/acga_paper.yaml"))
