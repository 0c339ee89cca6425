"""Configs written by lvas 0.1 (one global schema) read by this version (settings in their components).

lvas 0.1 kept every method's settings in one schema: ``train.pos_weight`` for every loss,
``train.lr_step`` / ``train.lr_milestones`` for the schedule, ``train.stage2_*`` for the two-stage
recipe, ``train.monitor`` and ``data.val_fraction`` for best-on-validation selection. Now each is a
setting of the component that reads it. :func:`upgrade` moves an old config's keys to their place,
so checkpoints, trial records and YAML files of 0.1 keep working:

==============================================  =================================================
lvas 0.1                                        now
==============================================  =================================================
``train.pos_weight``, ``train.aux_weight``      ``train.loss.pos_weight``, ``.aux_weight``
``train.weight_decay``                          ``train.optimizer.weight_decay``
``train.lr_step``, ``train.lr_gamma``           ``train.scheduler: {name: step, step, gamma}``
``train.lr_milestones`` (non-empty)             ``train.scheduler: {name: multistep, milestones, gamma}``
``train.stage2_epochs``, ``stage2_lr``,         ``train.recipe: {name: two_stage, stage2_epochs,
``stage1_cache``                                stage2_lr, stage1_cache}`` (dropped for ``joint``)
``train.select: best_val``, ``train.monitor``,  ``train.select: {name: best_val, monitor,
``train.val_samples``, ``data.val_fraction``    val_samples, val_fraction}`` (dropped for ``last``)
==============================================  =================================================

A *resolved* 0.1 config (saved with a run or checkpoint: it holds every key) also carried settings a
component did not read (``model.decoder.refine`` of the released decoder, ``model.text.hidden`` of
ACGA's Conv1d encoder); those are dropped. A hand-written YAML is not filtered: a key its component
does not have is reported.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from typing import Any

from lvas.errors import ConfigError
from lvas.registry import FAMILIES

_OLD_TRAIN = ("pos_weight", "aux_weight", "weight_decay", "lr_step", "lr_gamma", "lr_milestones", "stage2_epochs",
              "stage2_lr", "stage1_cache", "monitor", "val_samples")


def upgrade(data: dict, version_now: int, schema: type) -> dict:
    """``data`` in the layout of config version ``version_now`` (a copy; a config of that version is
    returned as it is). ``schema``: the experiment config dataclass (its slots name the families)."""
    version = data.get("lvas_config")
    if version == version_now:
        return {k: v for k, v in data.items() if k != "lvas_config"}
    if version not in (None, 2):
        raise ConfigError(f"lvas_config: {version!r}: a config of another lvas version (this one reads {version_now})")
    d = {k: v for k, v in data.items() if k != "lvas_config"}
    if version is None:
        d = _from_0_1(d, schema)
    return _amp_by_name(d)


def _amp_by_name(d: dict) -> dict:
    """Version 2 -> 3: ``train.amp`` true (bf16 on CUDA only) / false becomes ``auto`` / ``off``."""
    train = d.get("train")
    if isinstance(train, dict) and isinstance(train.get("amp"), bool):
        d = {**d, "train": {**train, "amp": "auto" if train["amp"] else "off"}}
    return d


def _from_0_1(data: dict, schema: type) -> dict:
    """Version 0.1 (no ``lvas_config``; settings in ``train.*``) -> 2."""
    train, dat = data.get("train"), data.get("data")
    old_train = isinstance(train, dict) and any(k in train for k in _OLD_TRAIN)
    old_data = isinstance(dat, dict) and "val_fraction" in dat
    if not (old_train or old_data):
        return data
    d = copy.deepcopy(data)
    train = d.setdefault("train", {}) if isinstance(d.get("train", {}), dict) else d["train"]
    dat = d.get("data") if isinstance(d.get("data"), dict) else {}
    resolved = all(k in train for k in ("lr_step", "pos_weight", "stage2_epochs", "monitor"))
    _move(train, "loss", {"pos_weight": "pos_weight", "aux_weight": "aux_weight"})
    _move(train, "optimizer", {"weight_decay": "weight_decay"})
    milestones = train.get("lr_milestones")
    if milestones:
        train.pop("lr_step", None)
        _move(train, "scheduler", {"lr_milestones": "milestones", "lr_gamma": "gamma"}, name="multistep")
    else:
        train.pop("lr_milestones", None)
        _move(train, "scheduler", {"lr_step": "step", "lr_gamma": "gamma"})
    if _name(train.get("recipe"), "joint") == "two_stage":
        _move(train, "recipe", {"stage2_epochs": "stage2_epochs", "stage2_lr": "stage2_lr",
                                "stage1_cache": "stage1_cache"})
    else:
        for k in ("stage2_epochs", "stage2_lr", "stage1_cache"):
            train.pop(k, None)
    if "val_fraction" in dat:
        train["val_fraction"] = dat.pop("val_fraction")
    if _name(train.get("select"), "last") == "best_val":
        _move(train, "select", {"monitor": "monitor", "val_samples": "val_samples", "val_fraction": "val_fraction"})
    else:
        for k in ("monitor", "val_samples", "val_fraction"):
            train.pop(k, None)
    if resolved:
        _drop_unread_settings(d, schema)
    return d


def _name(value: Any, default: str) -> Any:
    return value.get("name", default) if isinstance(value, dict) else (default if value is None else value)


def _move(train: dict, slot: str, keys: dict[str, str], name: str | None = None) -> None:
    """Move ``train[old]`` to ``train[slot][new]`` for each present key (a slot written as a name
    becomes a mapping)."""
    moved = {new: train.pop(old) for old, new in keys.items() if old in train}
    if not moved and name is None:
        return
    value = train.get(slot)
    target = {"name": value} if isinstance(value, str) else dict(value or {})
    if name is not None:
        target["name"] = name
    train[slot] = {**target, **moved}


def _drop_unread_settings(d: dict, schema: type) -> None:
    """Drop, in every slot of a resolved 0.1 config, the keys its entry and its slot do not declare."""
    def walk(node: Any, cls: type) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not isinstance(node, dict) or f.name not in node:
                continue
            value = node[f.name]
            family = f.metadata.get("slot")
            if family is not None and isinstance(value, dict):
                name = value.get("name", f.metadata["default"])
                if name in FAMILIES[family]:
                    keys = f.metadata["keys"]
                    keep = {"name", *FAMILIES[family].get(name).settings(),
                            *(x.name for x in dataclasses.fields(keys))} if keys else \
                        {"name", *FAMILIES[family].get(name).settings()}
                    node[f.name] = {k: v for k, v in value.items() if k in keep}
            elif dataclasses.is_dataclass(hints.get(f.name)):
                walk(value, hints[f.name])

    walk(d, schema)
