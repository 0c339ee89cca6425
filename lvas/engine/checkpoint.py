"""Checkpoints: written atomically, always holding the resolved config and the vocabulary, so
that evaluation rebuilds the model from the checkpoint alone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lvas.config import ExperimentConfig, config_hash, from_dict, to_dict
from lvas.data.errors import DataError


def save_checkpoint(path: str | Path, *, cfg: ExperimentConfig, model: torch.nn.Module, vocab: list[str],
                    **extra: Any) -> Path:
    """Write ``path`` atomically (temporary file + rename): a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"config": to_dict(cfg), "config_hash": config_hash(cfg), "vocab": list(vocab),
             "model": model.state_dict(), **extra}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint; a missing or unreadable file raises a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise DataError(path, f"not a readable checkpoint ({e})") from None
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise DataError(path, "not an lvas checkpoint (no config/model)")
    return state


def model_from_checkpoint(state: dict[str, Any]):
    """(config, model, vocabulary) rebuilt from a checkpoint alone."""
    from lvas.data.vocab import Vocabulary
    from lvas.models import build_model

    cfg = from_dict(state["config"])
    vocab = Vocabulary(state["vocab"][2:])
    model = build_model(cfg, vocab=vocab.itos, load_weights=False)
    model.load_state_dict(state["model"])
    return cfg, model, vocab
