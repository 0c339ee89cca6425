"""The released ReferFormer checkpoint layout (wjn922/ReferFormer ``models/referformer.py``) mapped onto
lvas: ``experiments/referformer_paper.yaml`` (Video-Swin-B), ``referformer_swin_t.yaml`` and
``referformer_r50.yaml`` build the same network from registered parts.

    backbone.0.body.{conv1,bn1,layer1..4}.*     spatial.stages.{0,0,1,2,3,4}.*  (ResNet-50, frozen BatchNorm)
    backbone.0.body.{patch_embed,layers,downsamples}.*   temporal.stages.*      (Video Swin, lvas/models/backbones/video_swin.py)
    text_encoder.* / resizer.*                  text.text_encoder.* / text.resizer.*
    input_proj / fusion_module / transformer / class_embed / bbox_embed / query_embed / pixel_decoder
                                                decoder.* (the same names)
    controller.*                                decoder.mask_head.controller.*

Left out on purpose: ``transformer.decoder.bbox_embed.*`` (with box refinement the release registers
its box heads twice: they are ``bbox_embed.*``, the same tensors) and RoBERTa's
``embeddings.position_ids`` buffer (0..511, derived). The backbone's position encodings and the
words' are computed, not stored.
"""

from __future__ import annotations

import re

from lvas.models.backbones.video_swin import original_key
from lvas.models.layouts.base import Layout, map_keys
from lvas.registry import LAYOUTS

DROP = (r"transformer\.decoder\.bbox_embed\..+", r"text_encoder\.embeddings\.position_ids")
_R50 = {"conv1": "stages.0.conv1", "bn1": "stages.0.bn1", "layer1": "stages.1.layer1", "layer2": "stages.2",
        "layer3": "stages.3", "layer4": "stages.4"}


def referformer_key(key: str) -> str:
    """A released ReferFormer key -> ours (KeyError for a key the layout does not know)."""
    m = re.fullmatch(r"backbone\.0\.body\.(conv1|bn1|layer\d)\.(.+)", key)
    if m:
        return f"spatial.{_R50[m[1]]}.{m[2]}"
    m = re.fullmatch(r"backbone\.0\.body\.(.+)", key)
    if m:
        return "temporal." + original_key(m[1])
    m = re.fullmatch(r"(text_encoder|resizer)\.(.+)", key)
    if m:
        return f"text.{m[1]}.{m[2]}"
    m = re.fullmatch(r"controller\.(.+)", key)
    if m:
        return "decoder.mask_head.controller." + m[1]
    m = re.fullmatch(r"(input_proj|fusion_module|transformer|class_embed|bbox_embed|query_embed|pixel_decoder)\.(.+)", key)
    if m:
        return f"decoder.{m[1]}.{m[2]}"
    raise KeyError(key)


def is_released_referformer(state: dict) -> bool:
    """True for a state dict in the released ReferFormer layout."""
    return "transformer.level_embed" in state and any(k.startswith("pixel_decoder.") for k in state)


def convert_referformer_state_dict(state: dict) -> dict:
    """Released ReferFormer keys -> lvas keys (the duplicated box heads and derived buffers dropped)."""
    return map_keys(state, referformer_key, DROP, "released ReferFormer")


LAYOUTS.register("referformer", "wjn922/ReferFormer models/referformer.py (ResNet-50, Video-Swin-T/S/B)")(
    Layout("ReferFormer", is_released_referformer, convert_referformer_state_dict, (),
           "experiments/referformer_paper.yaml (Video-Swin-B), referformer_swin_t.yaml, referformer_r50.yaml"))
