"""What a training needs before its first step: the device, the process group, seeds, the three
splits (the validation split carved by ``train.select``) and the loaders with their seeded order."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from lvas.config import ConfigError, ExperimentConfig, config_hash, safe_name
from lvas.data import build_dataset, collate, require_masks


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
    return dev


def amp_enabled(amp: str, device: torch.device) -> bool:
    """Whether ``train.amp`` runs the model under bf16 autocast on ``device``: ``auto`` on CUDA only,
    ``bf16`` everywhere (on a CPU too), ``off`` never."""
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


def cpu_bf16_guard(device: torch.device, amp: bool):
    """The context a training step runs in: with bf16 autocast on a CPU, oneDNN off. oneDNN's bf16
    Conv3d weight gradient comes out NaN now and then from finite inputs (torch 2.14, measured on an
    AMD EPYC with avx512_bf16: 11-16 of 200 backward passes; 0 with oneDNN off; repro:
    benchmarks/bf16_conv3d_cpu.py). Elsewhere nothing changes."""
    import contextlib

    @contextlib.contextmanager
    def onednn_off():
        before = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = False
        try:
            yield
        finally:
            torch.backends.mkldnn.enabled = before

    return onednn_off() if amp and device.type == "cpu" else contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_dir_for(cfg: ExperimentConfig) -> Path:
    return Path(cfg.train.out_dir) / f"{safe_name(cfg.name)}-{config_hash(cfg)}"


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed() -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


@dataclass
class Splits:
    """The training, validation (or None) and test sets, the vocabulary, the held-out video names."""

    train: Any
    val: Any
    test: Any
    vocab: Any
    held: list[str] = field(default_factory=list)


def make_splits(cfg: ExperimentConfig, selector, vocab=None) -> Splits:
    """The config's splits; the selector carves a validation split from training (``best_val``)."""
    full = build_dataset(cfg, cfg.data.train_split, vocab=vocab)
    require_masks(full, "data.train_split")
    test = build_dataset(cfg, cfg.data.test_split, vocab=full.vocab)
    require_masks(test)
    if len(test) == 0:  # said before training: a run with nothing to score would finish with no result
        raise ConfigError(f"data.test_split: the {cfg.data.test_split} split of {cfg.data.root} has no samples "
                          f"(lvas data check {cfg.data.root} --dataset {cfg.data.dataset.name} says why)")
    train, val, held = selector.carve(full)
    return Splits(train, val, test, full.vocab, held)


def epoch_order(n: int, seed: int, epoch: int, limit: int = 0) -> list[int]:
    """The global training order of one epoch: a permutation of ``n`` seeded by (seed, epoch), cut to
    ``limit`` samples -- the same for every number of processes (lvas.engine.batching deals it)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
    return order[:limit] if limit else order


def loader(ds, cfg: ExperimentConfig, sampler=None, batch_size: int | None = None, workers: int = 0,
           drop_last: bool = False, batch_sampler=None) -> DataLoader:
    """A loader over ``ds`` in ``sampler``'s order (or in order, or in ``batch_sampler``'s batches),
    never shuffled: the order is the seed's.

    Workers are started once and kept for the loader's life (``persistent_workers``).
    """
    if batch_sampler is not None:
        return DataLoader(ds, batch_sampler=batch_sampler, num_workers=workers, collate_fn=collate,
                          pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)
    if getattr(getattr(ds, "dataset", ds), "variable_clips", False):  # clips of different lengths (whole videos)
        batch_size = 1
    return DataLoader(ds, batch_size=batch_size or cfg.train.batch_size, shuffle=False, sampler=sampler,
                      num_workers=workers, collate_fn=collate, pin_memory=torch.cuda.is_available(),
                      persistent_workers=workers > 0, drop_last=drop_last)


def dataset_index(ds):
    """The sample index (DataFrame) of a dataset or of a Subset of one."""
    if isinstance(ds, Subset):
        return ds.dataset.index.iloc[list(ds.indices)]
    return ds.index
