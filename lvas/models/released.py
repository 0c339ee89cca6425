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
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from lvas.models.i3d import I3D_STAGES
from lvas.registry import LAYOUTS

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


@dataclass(frozen=True)
class Layout:
    """A released checkpoint layout: ``detect(state)`` recognises its keys, ``convert(state)`` renames
    them to ours (raising on any key it does not know); ``external``: our keys the file does not hold
    (a GloVe table the release looks up outside its model); ``method`` names the experiment YAML."""

    name: str
    detect: Callable[[dict], bool]
    convert: Callable[[dict], dict]
    external: tuple[str, ...]
    method: str


def unwrap(state: dict) -> dict:
    """The state dict inside a ``{"state_dict": ...}`` wrapper, ``module.`` prefixes removed."""
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


def find_layout(state: dict) -> Layout | None:
    """The registered layout whose keys ``state`` has, or None."""
    inner = unwrap(state) if isinstance(state, dict) else {}
    for entry in LAYOUTS:
        if entry.builder.detect(inner):
            return entry.builder
    return None


def load_layout(model: nn.Module, state: dict[str, torch.Tensor], layout: Layout, source: str = "checkpoint") -> None:
    """Load a state dict of a released layout into a model built from that method's YAML.

    Strict: every released key must land on one of ours with the same shape, and every one of
    ours (but ``layout.external``) must be covered; anything else raises naming the keys.
    """
    converted = layout.convert(unwrap(state))
    own = model.state_dict()
    external = [k for k in own if k.startswith(layout.external)
                or (k.endswith("num_batches_tracked") and k not in converted)]  # a counter, not a weight
    expected = set(own) - set(external)
    missing = sorted(expected - set(converted))
    unexpected = sorted(set(converted) - expected)
    shapes = [f"{k}: {tuple(converted[k].shape)} vs ours {tuple(own[k].shape)}"
              for k in sorted(expected & set(converted)) if converted[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{source} does not match the model of this config in the released {layout.name} layout "
            f"(build it from {layout.method}): "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} ({len(unexpected)}), "
            f"shape mismatches {shapes[:3]}")
    model.load_state_dict({**converted, **{k: own[k] for k in external}}, strict=True)


def load_released(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load a released CSTM state dict into a model built from ``experiments/cstm_released.yaml``."""
    load_layout(model, state, LAYOUTS.get("cstm").builder, source)


def map_keys(state: dict[str, torch.Tensor], new_key: Callable[[str], str], drop: tuple[str, ...] = (),
             what: str = "released") -> dict[str, torch.Tensor]:
    """Every key through ``new_key`` (which raises KeyError / IndexError / ValueError for a key it does
    not know); keys matching a ``drop`` regex (released parameters its forward never uses) are left
    out; unknown keys, and two keys landing on one, raise naming them."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if drop and re.fullmatch("|".join(drop), key):
            continue
        try:
            new = new_key(key)
        except (KeyError, IndexError, ValueError):
            unknown.append(key)
            continue
        if new in out:
            raise ValueError(f"{what} checkpoint: keys map twice onto {new!r}")
        out[new] = value
    if unknown:
        raise ValueError(f"{what} checkpoint: {len(unknown)} keys not in its layout, i.e. not in the {what} "
                         f"layout, e.g. {unknown[:5]}")
    return out


def rename(state: dict[str, torch.Tensor], rules: list[tuple[str, str]], drop: tuple[str, ...] = (),
           what: str = "released") -> dict[str, torch.Tensor]:
    """:func:`map_keys` with the first matching ``(regex, template)`` rule as the new key."""

    def new_key(key: str) -> str:
        for pattern, template in rules:
            m = re.fullmatch(pattern, key)
            if m:
                return template.format(*m.groups())
        raise KeyError(key)

    return map_keys(state, new_key, drop, what)


LAYOUTS.register("cstm", "RyanHTR/CSTM models/cstm_model.py")(
    Layout("CSTM", is_released_cstm, convert_released_state_dict, EXTERNAL_KEYS, "experiments/cstm_released.yaml"))
