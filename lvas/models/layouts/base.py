"""Released checkpoint layouts: what one is (a :class:`Layout`, registered in ``LAYOUTS``), how
its keys are renamed onto lvas's (:func:`rename`) and how it is loaded strictly (:func:`load_layout`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable
import torch
from torch import nn
from lvas.registry import LAYOUTS


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
    """The state dict inside a ``{"state_dict": ...}`` (CSTM, LBDT, ACGA) or ``{"model": ...}``
    (DETR-style: ReferFormer, MTTR) wrapper, ``module.`` prefixes removed."""
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
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
