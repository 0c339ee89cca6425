"""Checkpoints: written atomically, always holding the resolved config and the vocabulary, so
that evaluation rebuilds the model from the checkpoint alone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lvas.config import ExperimentConfig, config_hash, from_dict, saved_dict
from lvas.data.errors import DataError
from lvas.liveness import replace_atomic


def save_checkpoint(path: str | Path, *, cfg: ExperimentConfig, model: torch.nn.Module, vocab: list[str],
                    **extra: Any) -> Path:
    """Write ``path`` atomically (temporary file + rename): a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"config": saved_dict(cfg), "config_hash": config_hash(cfg), "vocab": list(vocab),
             "model": model.state_dict(), **extra}
    return replace_atomic(path, lambda tmp: torch.save(state, tmp))


MAX_CHECKPOINT_GB = 16.0  # a checkpoint unpacking to more is refused from its zip directory (LVAS_MAX_CHECKPOINT_GB)


def check_unpacked_size(path: Path) -> None:
    """A ``torch.save`` zip declares every member's size in its central directory: refuse one that would
    unpack to more than ``LVAS_MAX_CHECKPOINT_GB`` (default 16), or to more than 64 x its size on disk
    (torch stores tensors uncompressed; a deflated payload of gigabytes is a bomb), before reading it."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # the legacy (tar) format: read as it is
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataError(path, "not a readable checkpoint (broken zip directory)", quoted=e) from None
    limit = float(os.environ.get("LVAS_MAX_CHECKPOINT_GB", MAX_CHECKPOINT_GB)) * 2**30
    if total > limit or total > 64 * max(path.stat().st_size, 1 << 20):
        raise DataError(path, f"refused: the checkpoint unpacks to {total / 2**30:.1f} GiB from "
                              f"{path.stat().st_size / 2**20:.1f} MiB on disk (at most {limit / 2**30:.0f} GiB and 64 x "
                              f"its size; LVAS_MAX_CHECKPOINT_GB raises the first)")


def read_torch_file(path: str | Path) -> Any:
    """A ``torch.save`` file read with ``weights_only=True``: tensors and plain Python types only, so
    a crafted file cannot run code; one that would unpack to an unreasonable size is refused first.
    Anything else raises a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    check_unpacked_size(path)
    import argparse

    try:  # DETR-style releases (ReferFormer, MTTR) also save their argparse options: plain data
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle errors, truncated files, forbidden globals
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(path, f"not a readable checkpoint of tensors and plain types ({first[:200]})") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an lvas checkpoint (safely, see :func:`read_torch_file`); anything else raises a DataError."""
    state = read_torch_file(path)
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise DataError(Path(path), "not an lvas checkpoint (no config/model); a released CSTM checkpoint is "
                                    "evaluated with `lvas eval CHECKPOINT --config experiments/cstm_released.yaml`")
    return state


def model_from_released(path: str | Path, cfg, vocab) -> torch.nn.Module:
    """A released checkpoint (a registered layout: CSTM, LBDT, ACGA) in the model of ``cfg`` (e.g.
    ``experiments/cstm_released.yaml``); GloVe rows come from ``model.text.glove_path`` for ``vocab``."""
    import copy

    from lvas.models import build_model
    from lvas.models.layouts.base import find_layout, load_layout
    from lvas.registry import LAYOUTS

    state = read_torch_file(path)
    inner = state
    layout = find_layout(inner) if isinstance(inner, dict) else None
    if layout is None:
        raise DataError(Path(path), "neither an lvas checkpoint nor a state dict in a released layout "
                                    f"({', '.join(e.builder.name for e in LAYOUTS)})")
    c = copy.deepcopy(cfg)
    c.model.spatial.pretrained = c.model.temporal.pretrained = "none"  # every encoder weight comes from the file
    if isinstance(c.model.text.settings().get("pretrained"), bool):  # a language model's too
        c.model.text.pretrained = False
    model = build_model(c, vocab=vocab.itos, cache_dir=str(Path(cfg.data.root) / ".lvas_cache"))
    load_layout(model, inner, layout, str(path))
    return model


def model_from_checkpoint(state: dict[str, Any], path: str | Path = "checkpoint"):
    """(config, model, vocabulary) rebuilt from a checkpoint alone; weights that do not fit the
    stored config raise a DataError naming the first mismatching keys."""
    from lvas.config import ConfigError
    from lvas.data.vocab import vocabulary
    from lvas.models import build_model

    try:
        cfg = from_dict(state["config"], run_imports=False)
    except ConfigError as e:
        raise DataError(Path(path), f"its stored config is not valid for this lvas ({e})") from None
    vocab = vocabulary(cfg.model.text, state["vocab"])
    model = build_model(cfg, vocab=vocab.itos, load_weights=False)  # in the precision it was trained in
    weights = state["model"]
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    shape = [k for k in own if k in weights and getattr(weights[k], "shape", None) != own[k].shape]
    if missing or extra or shape:
        parts = [f"{what}: {', '.join(keys[:3])}" + (f" (+{len(keys) - 3})" if len(keys) > 3 else "")
                 for what, keys in (("missing", missing), ("unexpected", extra), ("other shape", shape)) if keys]
        raise DataError(Path(path), "its weights do not match its config (" + "; ".join(parts) + ")")
    model.load_state_dict(weights)
    return cfg, model, vocab
