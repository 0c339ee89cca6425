"""The released CSTM checkpoint layout (RyanHTR/CSTM ``models/cstm_model.py``) mapped onto lvas.

``experiments/cstm_released.yaml`` builds the same network from registered parts; this module
renames the release's state-dict keys to ours, one rule per part, and loads them strictly:
every released key lands on exactly one of our keys with the same shape, and every one of our
keys is covered, except ``text.embedding.weight`` (the release looks GloVe vectors up outside
the model; ours is a frozen table built from the GloVe file and the dataset vocabulary).

    t_layer{s}.{i}.…            temporal.stages.{s-1}.<I3D module i of stage s>.…  (hassony2 names)
    s_layer1.{0,1}              spatial.stages.0.{conv1,bn1}
    s_layer2.1.… / s_layer{3,4,5}.…   spatial.stages.1.layer1.… / spatial.stages.{2,3,4}.…
    txt_encoder.* / txt_norm.0.*      text.gru.* / text.norm.0.*
    cmam_{s,t}.{i}.vt|v_key|l_query|gamma   cmam.{spatial,temporal}.{i+1}.visual|key|query|gate
    ires_trans|vres_trans.{j}   decoder.trans.{spatial,temporal}.{j}
    conv_fuse1.{j} / conv_fuse2.{j} / conv_mask.{k}   decoder.fuse.{j}.conv / decoder.merge.{j} / decoder.heads.{k}
"""

from __future__ import annotations

import re
import torch
from torch import nn
from lvas.models.backbones.i3d import I3D_STAGES
from lvas.registry import LAYOUTS
from lvas.models.layouts.base import Layout, load_layout, map_keys, unwrap


EXTERNAL_KEYS = ("text.embedding.weight",)


_I3D_BRANCH = {"branch_0": "b0", "branch_1.0": "b1a", "branch_1.1": "b1b",
               "branch_2.0": "b2a", "branch_2.1": "b2b", "branch_3.1": "b3b"}


_CMAM_PART = {"vt": "visual", "v_key": "key", "l_query": "query"}


_CONV_BN = {"conv": "0", "bn": "1", "conv3d": "0", "batch3d": "1"}


_RESNET_STEM = {"0": "conv1", "1": "bn1"}


_RENAMES = [(r"txt_encoder\.(.+)", "text.gru.{}"), (r"txt_norm\.(.+)", "text.norm.{}"),
            (r"ires_trans\.(\d+)\.(.+)", "decoder.trans.spatial.{}.{}"),
            (r"vres_trans\.(\d+)\.(.+)", "decoder.trans.temporal.{}.{}"),
            (r"conv_fuse1\.(\d+)\.(.+)", "decoder.fuse.{}.conv.{}"),
            (r"conv_fuse2\.(\d+)\.(.+)", "decoder.merge.{}.{}"),
            (r"conv_mask\.(\d+)\.(.+)", "decoder.heads.{}.{}")]


def is_released_cstm(state: dict) -> bool:
    """True for a state dict in the released CSTM layout (``module.`` prefix allowed)."""
    return any(k.removeprefix("module.").startswith(("cmam_s.", "s_layer1.", "t_layer1.")) for k in state)


def _temporal(rest: str) -> str:
    stage, idx, tail = rest.split(".", 2)
    name = I3D_STAGES[int(stage) - 1][int(idx)]
    for src, dst in _I3D_BRANCH.items():
        if tail.startswith(src + "."):
            tail = dst + tail[len(src):]
            break
    tail = tail.replace("batch3d.", "bn.")
    return f"temporal.stages.{int(stage) - 1}.{name}.{tail}"


def _spatial(stage: int, tail: str) -> str:
    if stage == 1:
        idx, rest = tail.split(".", 1)
        return f"spatial.stages.0.{_RESNET_STEM[idx]}.{rest}"
    if stage == 2:
        idx, rest = tail.split(".", 1)
        if idx != "1":
            raise KeyError(tail)
        return f"spatial.stages.1.layer1.{rest}"
    return f"spatial.stages.{stage - 1}.{tail}"


def _cmam(branch: str, idx: str, tail: str) -> str:
    part, rest = tail.split(".", 1)
    if part == "gamma":
        return f"cmam.{branch}.{int(idx) + 1}.gate.{rest.removeprefix('0.')}"
    sub, rest2 = rest.split(".", 1)
    if part in ("vt", "v_key"):
        sub = _CONV_BN[sub]
    return f"cmam.{branch}.{int(idx) + 1}.{_CMAM_PART[part]}.{sub}.{rest2}"


def released_key(key: str) -> str:
    """Our key for one released key; an unknown key raises KeyError."""
    k = key.removeprefix("module.")
    m = re.fullmatch(r"t_layer(\d)\.(.+)", k)
    if m:
        return _temporal(f"{m.group(1)}.{m.group(2)}")
    m = re.fullmatch(r"s_layer(\d)\.(.+)", k)
    if m:
        return _spatial(int(m.group(1)), m.group(2))
    m = re.fullmatch(r"cmam_([st])\.(\d+)\.(.+)", k)
    if m:
        return _cmam("spatial" if m.group(1) == "s" else "temporal", m.group(2), m.group(3))
    for pattern, template in _RENAMES:
        m = re.fullmatch(pattern, k)
        if m:
            return template.format(*m.groups())
    raise KeyError(key)


def convert_released_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released CSTM keys -> lvas keys (``state_dict`` / ``module.`` wrappers removed)."""
    return map_keys(unwrap(state), released_key, what="released CSTM")


def load_released(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load a released CSTM state dict into a model built from ``experiments/cstm_released.yaml``."""
    load_layout(model, state, LAYOUTS.get("cstm").builder, source)


LAYOUTS.register("cstm", "RyanHTR/CSTM models/cstm_model.py")(
    Layout("CSTM", is_released_cstm, convert_released_state_dict, EXTERNAL_KEYS, "experiments/cstm_released.yaml"))
