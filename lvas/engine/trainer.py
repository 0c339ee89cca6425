"""Training: joint or the paper's two-stage recipe, checkpointed every epoch, resumable, tracked.

``train_experiment`` is what ``lvas train`` and every sweep trial run: it opens the MLflow run,
logs the resolved config, FLOPs and tags, trains, and logs the selected checkpoint, its test
metrics and a few qualitative overlays. A crash marks the run FAILED with its traceback.

No selection on the test split: the checkpoint is chosen by ``train.select`` — ``last`` (the
paper trains a fixed schedule; default) or ``best_val`` (best ``train.monitor`` on a validation
split carved from the training split by video, ``data.val_fraction`` of its videos, chosen
deterministically and recorded as ``val_videos.json``). The test split is read once, after
training, to score the selected checkpoint (``test/*`` metrics).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from lvas.config import (UNUSED, ConfigError, ExperimentConfig, config_hash, safe_name, saved_dict, to_dict,
                         to_yaml, unused_keys)
from lvas.engine import resources
from lvas.engine.checkpoint import load_checkpoint, save_checkpoint
from lvas.engine.evaluate import evaluate
from lvas.engine.losses import build_loss
from lvas.liveness import file_lock, write_atomic
from lvas.metrics import METRIC_NAMES, VIDEO_METRIC_NAMES
from lvas.models.base import to_channels_last

EpochCallback = Callable[[int, dict[str, float]], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class FitResult:
    """``checkpoint``: the selected model (``model.pt``); ``selected``: its epoch, the rule and its
    validation metrics (if any); ``test``: its test metrics (filled after training)."""

    run_dir: Path
    checkpoint: Path
    last_checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    selected: dict[str, Any] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    protocols: dict[str, dict[str, float]] = field(default_factory=dict)  # the same predictions, every protocol


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_dir_for(cfg: ExperimentConfig) -> Path:
    return Path(cfg.train.out_dir) / f"{safe_name(cfg.name)}-{config_hash(cfg)}"


# --------------------------------------------------------------------------- data


def validation_videos(videos: list[str], fraction: float) -> list[str]:
    """The training videos held out for validation: a fixed, seed-independent choice (sorted
    names shuffled with seed 0), at least one video, never all of them."""
    names = sorted(set(videos))
    if len(names) < 2:
        raise ConfigError("train.select: best_val needs a training split of at least 2 videos to hold some out")
    k = min(len(names) - 1, max(1, round(fraction * len(names))))
    random.Random(0).shuffle(names)
    return sorted(names[:k])


def make_datasets(cfg: ExperimentConfig, vocab=None):
    """(train set, validation set or None, test set, vocabulary, held-out video names).

    With ``train.select: best_val`` the validation set is ``data.val_fraction`` of the training
    split's videos (see :func:`validation_videos`), removed from training; otherwise there is none.
    """
    from lvas.data import build_dataset, require_masks

    full = build_dataset(cfg, cfg.data.train_split, vocab=vocab)
    require_masks(full, "data.train_split")
    test = build_dataset(cfg, cfg.data.test_split, vocab=full.vocab)
    require_masks(test)
    if cfg.train.select != "best_val":
        return full, None, test, full.vocab, []
    videos = full.videos()
    held = set(validation_videos(videos, cfg.data.val_fraction))
    train = Subset(full, [i for i, v in enumerate(videos) if v not in held])
    val_idx = [i for i, v in enumerate(videos) if v in held]
    if cfg.train.val_samples:
        val_idx = val_idx[: cfg.train.val_samples]
    return train, Subset(full, val_idx), test, full.vocab, sorted(held)


class EpochOrder(torch.utils.data.Sampler):
    """The training order of one epoch: a permutation of ``n`` seeded by (seed, epoch), cut to
    ``limit`` samples, this rank's share. One sampler serves every epoch (``set_epoch``), so one
    loader with persistent workers does too."""

    def __init__(self, n: int, seed: int, limit: int = 0, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.limit, self.rank, self.world, self.epoch = n, seed, limit, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> list[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch)).tolist()
        if self.limit:
            order = order[: self.limit]
        return order[self.rank::self.world]

    def __iter__(self):
        return iter(self.order())

    def __len__(self) -> int:
        return len(range(self.rank, min(self.n, self.limit or self.n), self.world))


def _loader(ds, cfg: ExperimentConfig, sampler=None, batch_size: int | None = None, workers: int = 0,
            drop_last: bool = False) -> DataLoader:
    """A loader over ``ds`` in ``sampler``'s order (or in order), never shuffled: the order is the seed's.

    Workers are started once and kept for the loader's life (``persistent_workers``).
    """
    from lvas.data import collate

    return DataLoader(ds, batch_size=batch_size or cfg.train.batch_size, shuffle=False, sampler=sampler,
                      num_workers=workers, collate_fn=collate, pin_memory=torch.cuda.is_available(),
                      persistent_workers=workers > 0, drop_last=drop_last)


# --------------------------------------------------------------------------- one fit


def fit(cfg: ExperimentConfig, model: torch.nn.Module, run_dir: Path, train_set, val_set, vocab, *,
        epochs: int, lr: float, trainable: list[torch.nn.Parameter] | None = None,
        frozen: list[torch.nn.Module] = (), tracker=None, prefix: str = "", resume: bool = True,
        progress: bool = True, epoch_callback: EpochCallback | None = None) -> FitResult:
    """Train ``model`` for ``epochs``, checkpointing after each one; never reads the test split.

    With a validation set, evaluates it after every epoch and (``train.select: best_val``) keeps
    the best epoch as ``model.pt``; otherwise ``model.pt`` is the last epoch. With ``resume`` and a
    ``last.pt`` in ``run_dir``, continues from it: same data order per epoch (seeded by ``seed``
    and the epoch), same optimizer and scheduler state, hence the same result as an
    uninterrupted run.
    """
    t = cfg.train
    rank, world = dist_info()
    device = resolve_device(t.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    last, chosen_path = run_dir / "last.pt", run_dir / "model.pt"
    workers = resources.apply(cfg, device).workers
    model.to(device)
    if t.channels_last:  # NHWC 2-D convolutions: faster on oneDNN (CPU) and cuDNN alike
        to_channels_last(model)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    params = trainable if trainable is not None else [p for p in model.parameters() if p.requires_grad]
    opt_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[t.optimizer]
    optimizer = opt_class(params, lr=lr, weight_decay=t.weight_decay)
    if t.lr_milestones:  # LBDT: x 0.5 at epochs 10, 12, 14
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(t.lr_milestones), gamma=t.lr_gamma)
    else:  # CSTM / ACGA: x 0.1 every lr_step epochs
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=t.lr_step, gamma=t.lr_gamma)
    loss_fn = build_loss(t)
    start, history, chosen = 0, [], {}
    if resume and last.is_file():
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, history, chosen = state["epoch"] + 1, state["history"], state.get("selected", {})
        if tracker is not None and rank == 0:
            # an epoch is checkpointed before it is logged: a run killed in between logs it now, once
            logged = tracker.logged_steps("train_loss", prefix)
            for record in history:
                if record["epoch"] not in logged:
                    log_epoch(tracker, record, prefix)
    use_amp = t.amp and device.type == "cuda"
    net = model
    if world > 1:  # DistributedDataParallel under torchrun: each rank takes every world-th clip
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    batch_size = max(1, t.batch_size // world)  # train.batch_size stays the global batch
    n = len(train_set)
    if n == 0:
        raise ConfigError(f"data.root: the {cfg.data.train_split} split of {cfg.data.root} has no samples")
    sampler = EpochOrder(n, cfg.seed, t.limit_batches * t.batch_size, rank, world)
    train_loader = _loader(train_set, cfg, sampler, batch_size, workers, drop_last=t.drop_last)
    if len(train_loader) == 0:
        raise ConfigError(f"train.drop_last: the {n} training samples make no full batch of {batch_size}")
    val_loader = _loader(val_set, cfg, workers=workers) if val_set is not None else None
    # BatchNorm layers whose weights are all frozen (e.g. ACGA's I3D below Mixed_4f) keep their statistics
    frozen_norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                    and m.weight is not None and not any(p.requires_grad for p in m.parameters())]
    for epoch in range(start, epochs):
        sampler.set_epoch(epoch)
        model.train()
        for m in [*frozen, *frozen_norms]:
            m.eval()
        total, count, skipped = 0.0, 0, 0
        bar = tqdm(train_loader, desc=f"{prefix}epoch {epoch + 1}/{epochs}",
                   unit="batch", disable=not progress or rank > 0, leave=False)
        for step, batch in enumerate(bar):
            skipped += batch["skipped"]
            if "clip" not in batch:
                continue
            clip = batch["clip"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = net(clip, batch["tokens"].to(device), batch["mask"].to(device))
            loss = loss_fn(out, batch["target"].to(device))
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"training diverged: loss is {loss.item()} at epoch {epoch + 1}, "
                                       f"step {step + 1} (lower train.lr or check the data)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            optimizer.step()
            total += loss.item() * clip.shape[0]
            count += clip.shape[0]
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
        lr_used = optimizer.param_groups[0]["lr"]
        scheduler.step()
        if rank > 0:  # rank 0 evaluates, checkpoints and logs; the others wait for it
            torch.distributed.barrier()
            continue
        record = {"epoch": epoch + 1, "train_loss": total / max(count, 1), "lr": lr_used, "train_skipped": skipped}
        metrics: dict[str, float] = {}
        if val_set is not None:
            ev = evaluate(model, val_loader, t.protocol, device, amp=use_amp, progress=progress)
            metrics = ev["metrics"]
            record.update({"val_skipped": ev["skipped"], **{f"val/{k}": v for k, v in metrics.items()}})
        history.append(record)
        if t.select == "best_val":
            score = metrics.get(t.monitor, float("nan"))
            take = not chosen or (score == score and score > chosen.get(f"val/{t.monitor}", float("-inf")))
        else:
            take = epoch == epochs - 1
        if take:
            chosen = {"epoch": epoch + 1, "select": t.select, **{f"val/{k}": v for k, v in metrics.items()}}
            save_checkpoint(chosen_path, cfg=cfg, model=model, vocab=vocab.itos, epoch=epoch, selected=chosen)
        save_checkpoint(last, cfg=cfg, model=model, vocab=vocab.itos, epoch=epoch, history=history, selected=chosen,
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
        write_atomic(run_dir / "history.json", json.dumps(history, indent=1))
        if tracker is not None:  # after the checkpoint: a kill in between is caught up on resume, not repeated
            log_epoch(tracker, record, prefix)
        if progress:
            shown = (f"  val {t.protocol} AP {metrics['AP']:.1f}  oIoU {metrics['oIoU']:.1f}  mIoU {metrics['mIoU']:.1f}"
                     if metrics else "")
            tqdm.write(f"{prefix}epoch {epoch + 1}: loss {record['train_loss']:.4f}{shown}")
        if world > 1:
            torch.distributed.barrier()
        if epoch_callback is not None:
            epoch_callback(epoch + 1, metrics)
    return FitResult(run_dir, chosen_path, last, history, chosen)


def is_counter(key: str) -> bool:
    """Sample counts (``val/n``, ``train_skipped``, ...): tags, not metrics -- they would bury the curves."""
    return key.endswith("_skipped") or key.rsplit("/", 1)[-1] in ("n", "expressions")


def log_epoch(tracker, record: dict[str, Any], prefix: str = "") -> None:
    """One epoch's record: its curves as metrics at step = epoch; its counters as tags when non-zero."""
    tracker.log_metrics({k: v for k, v in record.items() if k != "epoch" and not is_counter(k)},
                        step=record["epoch"], prefix=prefix)
    skipped = {f"{prefix}{k}": str(v) for k, v in record.items() if k.endswith("_skipped") and v}
    if skipped:
        tracker.set_tags(skipped)


def best_val_epoch(history: list[dict[str, Any]], monitor: str) -> tuple[int, float] | None:
    """(epoch, value) of the best ``val/<monitor>`` in a history (first on ties); None without validation."""
    scored = [(r["epoch"], r[f"val/{monitor}"]) for r in history
              if r.get(f"val/{monitor}") is not None and r[f"val/{monitor}"] == r[f"val/{monitor}"]]
    return max(scored, key=lambda er: (er[1], -er[0])) if scored else None


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed() -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


# --------------------------------------------------------------------------- recipes


def stage1_config(cfg: ExperimentConfig, branch: str) -> ExperimentConfig:
    """The single-branch network stage 1 of the two-stage recipe trains."""
    c = copy.deepcopy(cfg)
    c.model.mode = branch
    c.model.fusion = "add"  # unused with one branch; fixed so it does not split the cache
    c.train.recipe = "joint"
    c.name = f"{cfg.name}-stage1-{branch}"
    return c


def stage1_key(cfg: ExperimentConfig, branch: str) -> str:
    """Cache key of a stage-1 network: everything that changes its result, nothing else."""
    c = stage1_config(cfg, branch)
    train = {k: v for k, v in to_dict(c.train).items()
             if k not in ("stage2_epochs", "stage2_lr", "stage1_cache", "out_dir", "recipe")}
    return config_hash({"seed": c.seed, "model": to_dict(c.model), "data": to_dict(c.data), "train": train})


def _stage1(cfg: ExperimentConfig, branch: str, vocab, train_set, val_set, cache_root: Path, tracker,
            progress: bool, prefix: str, epoch_callback: EpochCallback | None = None) -> Path:
    """Train (or find in the cache) the stage-1 network of ``branch``; returns its folder.

    On a cache hit its per-epoch history is logged to this run too, so every run shows its curves.
    """
    c1 = stage1_config(cfg, branch)
    d1 = cache_root / f"{branch}-{stage1_key(cfg, branch)}"
    done = d1 / "done.json"
    d1.mkdir(parents=True, exist_ok=True)
    rank, world = dist_info()
    trained = False
    # two trials needing the same network: one trains, one waits (under torchrun the ranks
    # train it together, so they take no lock)
    with file_lock(d1 / ".lock") if world == 1 else contextlib.nullcontext():
        if not done.is_file():
            r1 = fit(c1, _build(c1, vocab), d1, train_set, val_set, vocab, epochs=c1.train.epochs, lr=c1.train.lr,
                     tracker=tracker, prefix=prefix, resume=True, progress=progress, epoch_callback=epoch_callback)
            trained = True
            if rank == 0:
                write_atomic(done, json.dumps(r1.selected))
    if tracker is not None:
        tracker.set_tags({f"stage1_{branch}_cache": str(d1)})
        if not trained:
            for record in json.loads((d1 / "history.json").read_text()):
                log_epoch(tracker, record, prefix)
    return d1


def _link_or_copy(src: Path, dst: Path) -> None:
    import shutil

    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _build(cfg: ExperimentConfig, vocab) -> torch.nn.Module:
    from lvas.models import build_model

    seed_everything(cfg.seed)
    cache = Path(cfg.data.root) / ".lvas_cache"
    return build_model(cfg, vocab=vocab.itos, cache_dir=str(cache))


def _init_state(cfg: ExperimentConfig) -> dict | None:
    if not cfg.train.init_checkpoint:
        return None
    from lvas.sweep.spec import resolve_checkpoint

    return load_checkpoint(resolve_checkpoint(cfg.train.init_checkpoint, seed=cfg.seed))


def test_metrics(cfg: ExperimentConfig, fit_result: FitResult, test_set, progress: bool = True,
                 model: torch.nn.Module | None = None) -> FitResult:
    """Score the selected checkpoint once on the test split; written to ``test_metrics.json``.

    ``model``: the selected model when the caller already holds it (else rebuilt from the checkpoint).
    """
    from lvas.engine.checkpoint import model_from_checkpoint

    if dist_info()[0] > 0:  # rank 0 scores; the others are done
        return fit_result
    if model is None:
        state = load_checkpoint(fit_result.checkpoint)
        _, model, _ = model_from_checkpoint(state)
        fit_result.selected = state.get("selected", fit_result.selected)
    device = resolve_device(cfg.train.device)
    workers = resources.apply(cfg, device).workers
    model.to(device)
    if cfg.train.channels_last:
        to_channels_last(model)
    ev = evaluate(model, _loader(test_set, cfg, workers=workers), cfg.train.protocol, device, progress=progress,
                  every_protocol=True)
    fit_result.test = {"epoch": fit_result.selected.get("epoch", 0), **ev["metrics"], "skipped": ev["skipped"]}
    fit_result.protocols = ev["by_protocol"]
    write_atomic(fit_result.run_dir / "test_protocols.json", json.dumps(ev["by_protocol"], indent=1))
    write_atomic(fit_result.run_dir / "test_metrics.json", json.dumps(fit_result.test, indent=1))
    write_atomic(fit_result.run_dir / "test_samples.json", json.dumps(
        {"protocol": cfg.train.protocol, "split": cfg.data.test_split, "samples": ev["samples"]}))
    return fit_result


def evaluate_only(cfg: ExperimentConfig, run_dir: Path, state: dict, tracker=None, progress: bool = True) -> FitResult:
    """Evaluate a trained checkpoint on the config's test split (e.g. Table 2: A2D model on J-HMDB)."""
    from lvas.data import build_dataset, require_masks
    from lvas.engine.checkpoint import model_from_checkpoint

    trained, model, vocab = model_from_checkpoint(state)
    test = build_dataset(cfg, cfg.data.test_split, vocab=vocab)
    require_masks(test)
    run_dir.mkdir(parents=True, exist_ok=True)
    selected = {"epoch": 0, "select": "given checkpoint"}
    path = save_checkpoint(run_dir / "model.pt", cfg=trained, model=model, vocab=vocab.itos, epoch=0, selected=selected)
    (run_dir / "history.json").write_text("[]")
    return test_metrics(cfg, FitResult(run_dir, path, path, [], selected), test, progress, model=model)


def assemble_stage2(model: torch.nn.Module, stage1: dict[str, dict[str, torch.Tensor]]) -> list[torch.nn.Module]:
    """Give each branch of a two-branch model everything its stage-1 network was trained with.

    For every branch, the keys under ``model.branch_keys(branch)`` (encoder, its CMAMs, its text
    encoder: embedding and GRU) are loaded from that branch's stage-1 state dict and frozen.
    Parts both branches claim (a shared text encoder) cannot come from two networks: that raises.

    Returns:
        The frozen modules (kept in eval mode during stage 2).
    """
    own = model.state_dict()
    claims: dict[str, str] = {}
    load: dict[str, torch.Tensor] = {}
    for branch, state in stage1.items():
        prefixes = model.branch_keys(branch)
        keys = [k for k in own if k.startswith(prefixes)]
        for k in keys:
            if k in claims:
                raise ConfigError(f"model.text.name: {k} is shared by the {claims[k]} and {branch} branches, so stage 2 "
                                  f"cannot take it from two stage-1 networks (use a text encoder with one part per "
                                  f"branch, e.g. gru, or train.recipe: joint)")
            if k not in state:
                raise ValueError(f"stage-1 {branch} network lacks {k}")
            claims[k], load[k] = branch, state[k]
    model.load_state_dict(load, strict=False)
    frozen_prefixes = tuple(p for b in stage1 for p in model.branch_keys(b))
    for name, p in model.named_parameters():
        if name.startswith(frozen_prefixes):
            p.requires_grad_(False)
    return [m for name, m in model.named_modules() if name and f"{name}.".startswith(frozen_prefixes)]


def _log_datasets(tracker, cfg: ExperimentConfig, train_set, val_set, test_set) -> None:
    """The run's dataset inputs (name/split, root, sample count, digest of the sample index)."""
    from lvas.tracking import dataset_digest

    for ds, split, context in ((train_set, cfg.data.train_split, "train"), (val_set, "val", "validation"),
                               (test_set, cfg.data.test_split, "test")):
        if ds is None:
            continue
        if isinstance(ds, Subset):  # training less its validation videos, or the validation videos
            index = ds.dataset.index.iloc[list(ds.indices)]
        else:
            index = ds.index
        tracker.log_dataset(dataset_digest(index, cfg.data.dataset, split, cfg.data.root), context)


def train_model(cfg: ExperimentConfig, run_dir: Path, *, tracker=None, resume: bool = True, progress: bool = True,
                epoch_callback: EpochCallback | None = None) -> FitResult:
    """Run the config's recipe in ``run_dir``, then score the selected model on the test split."""
    init = _init_state(cfg)
    if cfg.train.eval_only:
        if init is None:
            raise ConfigError("train.eval_only: needs train.init_checkpoint (a checkpoint or sweep:<file>#<label>)")
        return evaluate_only(cfg, run_dir, init, tracker, progress)
    train_set, val_set, test_set, vocab, held = make_datasets(cfg)
    if tracker is not None:
        _log_datasets(tracker, cfg, train_set, val_set, test_set)
    run_dir.mkdir(parents=True, exist_ok=True)
    if held:
        write_atomic(run_dir / "val_videos.json", json.dumps(held, indent=0))
    if init is not None:
        from lvas.data.vocab import Vocabulary

        vocab = Vocabulary(init["vocab"][2:], cfg.model.text.tokenizer)
        for ds in (train_set, val_set, test_set):
            if ds is not None:
                getattr(ds, "dataset", ds).vocab = vocab
    if cfg.train.recipe == "joint":
        model = _build(cfg, vocab)
        if init is not None:
            model.load_state_dict(init["model"])
        r = fit(cfg, model, run_dir, train_set, val_set, vocab, epochs=cfg.train.epochs, lr=cfg.train.lr,
                tracker=tracker, resume=resume, progress=progress, epoch_callback=epoch_callback)
        return test_metrics(cfg, r, test_set, progress)
    cache_root = Path(cfg.train.stage1_cache) if cfg.train.stage1_cache else run_dir / "stage1"
    if cfg.model.mode != "both":
        # One branch under the two-stage recipe is exactly its stage-1 network (Table 3a rows 1-2),
        # shared through the cache with every two-branch trial that needs it.
        d1 = _stage1(cfg, cfg.model.mode, vocab, train_set, val_set, cache_root, tracker, progress, "",
                     epoch_callback)
        for name in ("model.pt", "last.pt", "history.json"):
            _link_or_copy(d1 / name, run_dir / name)
        r = FitResult(run_dir, run_dir / "model.pt", run_dir / "last.pt",
                      json.loads((run_dir / "history.json").read_text()))
        return test_metrics(cfg, r, test_set, progress)
    stage1 = {branch: _stage1(cfg, branch, vocab, train_set, val_set, cache_root, tracker, progress,
                              f"stage1_{branch}/") / "model.pt" for branch in ("spatial", "temporal")}
    model = _build(cfg, vocab)
    frozen = assemble_stage2(model, {b: load_checkpoint(p)["model"] for b, p in stage1.items()})
    trainable = [p for p in model.parameters() if p.requires_grad]
    r = fit(cfg, model, run_dir, train_set, val_set, vocab, epochs=cfg.train.stage2_epochs,
            lr=cfg.train.stage2_lr, trainable=trainable, frozen=frozen, tracker=tracker, prefix="",
            resume=resume, progress=progress, epoch_callback=epoch_callback)
    return test_metrics(cfg, r, test_set, progress)


# --------------------------------------------------------------------------- the tracked run


OVERLAY_SIDE = 240  # each panel's shorter side at least this many pixels (synthetic frames are 64 px)


def overlay_image(meta: dict, root_clip: torch.Tensor, pred: torch.Tensor, gt: torch.Tensor):
    """frame | prediction (cyan, a colour no synthetic sprite has) | ground truth (green), enlarged
    to a readable size, with the query and a colour key written under the panels; one PIL image."""
    from PIL import Image, ImageDraw, ImageFont

    from lvas.data.clips import Letterbox

    lb = Letterbox(tuple(meta["orig"]), tuple(meta["resized"]), root_clip.shape[-1])
    h, w = lb.resized
    scale = max(1.0, OVERLAY_SIDE / min(lb.orig))
    size = (round(lb.orig[0] * scale), round(lb.orig[1] * scale))
    frame = torch.nn.functional.interpolate(root_clip[None, :, :h, :w], size=size, mode="bilinear",
                                            align_corners=False)[0].clamp(0, 1)
    base = (frame.permute(1, 2, 0).numpy() * 255).astype(np.uint8)

    def tint(mask, colour):
        m = torch.nn.functional.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].numpy() > 0.5
        img = base.astype(np.float32).copy()
        img[m] = 0.35 * img[m] + 0.65 * np.asarray(colour, np.float32)
        return img.astype(np.uint8)

    panels = np.concatenate([base, tint(pred, (0, 255, 255)), tint(gt, (40, 220, 40))], axis=1)
    font = ImageFont.load_default(size=15)
    caption = f'"{meta["query"]}"  ({meta["video"]}, frame {meta["frame"]})'
    key = "frame  |  prediction (cyan)  |  ground truth (green)"
    out = Image.new("RGB", (panels.shape[1], panels.shape[0] + 46), "white")
    out.paste(Image.fromarray(panels), (0, 0))
    draw = ImageDraw.Draw(out)
    draw.text((6, panels.shape[0] + 4), caption, fill="black", font=font)
    draw.text((6, panels.shape[0] + 24), key, fill=(90, 90, 90), font=font)
    return out


def log_overlays(tracker, model, val_set, cfg: ExperimentConfig, n: int, out_dir: Path, step: int = 0) -> list[Path]:
    """Qualitative overlays of the first ``n`` test samples (after training; nothing is selected on
    them): PNGs in ``out_dir`` and MLflow images ``overlay_<i>`` at ``step`` (the selected epoch)."""
    from lvas.data import collate
    from lvas.data.clips import Letterbox
    from lvas.metrics import masks_for_protocol

    paths = []
    model.eval()
    device = next(model.parameters()).device
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(min(n, len(val_set))):
        item = val_set[i]
        if item is None:
            continue
        b = collate([item])
        with torch.no_grad():
            lg = model(b["clip"].to(device), b["tokens"].to(device), b["mask"].to(device))["logits"][0, 0].float().cpu()
        meta = item["meta"]
        lb = Letterbox(tuple(meta["orig"]), tuple(meta["resized"]), lg.shape[-1])
        pred, gt = masks_for_protocol(lg, item["gt"], lb, cfg.train.protocol)
        target = item["clip"][:, item["clip"].shape[1] // 2]
        # the sample's position in the name: two queries on one frame are two files
        p = out_dir / f"overlay_{i:02d}_{safe_name(str(meta['video']))}_{int(meta['frame']):05d}.png"
        image = overlay_image(meta, target, pred, gt)
        image.save(p)
        paths.append(p)
        tracker.log_image(image, key=f"overlay_{i:02d}", step=step)
    return paths


def train_experiment(cfg: ExperimentConfig, run_dir: str | Path | None = None, *, resume: bool = False,
                     tracking_uri: str | None = None, experiment: str | None = None,
                     parent_run_id: str | None = None, run_name: str | None = None, extra_tags=None,
                     progress: bool = True, epoch_callback: EpochCallback | None = None, track: bool = True,
                     description: str = "", experiment_description: str = ""):
    """Train and evaluate one config inside an MLflow run (see module docstring).

    ``description``: the run's description in the MLflow UI; ``experiment_description``: its
    experiment's, when the experiment has none yet.

    Returns:
        (FitResult, MLflow run id or None).
    """
    from lvas.flops import measure_config_cached as measure_config
    from lvas.config import redact
    from lvas.tracking import NOTE_TAG, Tracker, flatten, git_commit, git_dirty, quiet_mlflow, resolve_uri, reusable_run

    init_distributed()
    rank, _ = dist_info()
    track = track and rank == 0
    progress = progress and rank == 0
    run_dir = Path(run_dir) if run_dir is not None else run_dir_for(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    # rank 0 holds the folder for all ranks of a torchrun
    with _holding(run_dir, resume) if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            _check_same_config(cfg, run_dir)
            write_atomic(run_dir / "config.yaml", to_yaml(cfg))
        id_file = run_dir / "mlflow_run_id"
        uri = resolve_uri(tracking_uri, cfg.tracking.uri)
        exp_name = experiment or cfg.tracking.experiment or cfg.name
        run_id, forked = reusable_run(uri, exp_name, run_dir, id_file, resume) if track else (None, None)
        if forked and progress:
            print(f"note: {run_dir} was copied from the folder of MLflow run {forked}; that run is left as it is and "
                  f"this folder's training goes on in a new run", file=sys.stderr, flush=True)
        device = resolve_device(cfg.train.device)
        tags = {"config_hash": config_hash(cfg), "git_commit": git_commit(), "git_dirty": git_dirty(),
                **resources.float_path(device, resources.plan(cfg, device).threads),
                "protocol": cfg.train.protocol,
                "dataset": cfg.data.dataset, "recipe": cfg.train.recipe, "run_dir": str(run_dir.resolve()),
                **({NOTE_TAG: redact(description)} if description else {}), **(extra_tags or {}),
                **({"forked_from": forked} if forked else {})}
        tracker = Tracker(uri, exp_name, run_name=run_name or cfg.name, run_id=run_id, parent_run_id=parent_run_id,
                          tags=tags, system_metrics=cfg.tracking.system_metrics, active=track,
                          experiment_description=experiment_description)
        with quiet_mlflow(), tracker:
            if tracker.run_id and rank == 0:
                write_atomic(id_file, tracker.run_id)
            if not (resume and run_id):  # a new run, or one killed before its first checkpoint: (re)log what it is
                unused = unused_keys(cfg)
                tracker.log_params({k: UNUSED if k in unused else v for k, v in flatten(saved_dict(cfg)).items()})
                tracker.log_text(to_yaml(cfg), "config.yaml")
                try:
                    fl = measure_config(cfg)
                    tracker.log_dict({"frames": fl.frames, "size": fl.size, "gmacs": fl.gmacs, "gflops_2per_mac": fl.gflops,
                                      "params": fl.params, "parts_gmacs": {k: v / 1e9 for k, v in fl.parts.items()}},
                                     "flops.json")
                    tracker.log_metrics({"gmacs": fl.gmacs, "params_m": fl.params / 1e6})
                except Exception as e:  # noqa: BLE001 - FLOPs are informative; never fail a run on them
                    tracker.set_tags({"flops_error": str(e)[:500]})
            result = train_model(cfg, run_dir, tracker=tracker, resume=resume, progress=progress,
                                 epoch_callback=epoch_callback if rank == 0 else None)
            if rank > 0:
                return result, None
            tracker.log_metrics({f"test/{k}": v for k, v in result.test.items()
                                 if k not in ("epoch", "skipped") and not is_counter(k)})
            # the headline, first in the UI's metric list: the selected model on the test split, main protocol
            tracker.log_metrics({k: result.test[k] for k in ("AP", "mIoU", "oIoU", "JF") if k in result.test})
            tracker.set_tags({f"test_{k.replace('/', '_')}": str(v) for k, v in result.test.items() if is_counter(k)})
            tracker.log_metrics({f"protocol/{p}/{k}": v for p, m in result.protocols.items()
                                 for k, v in m.items() if k in METRIC_NAMES + VIDEO_METRIC_NAMES})
            tracker.set_tags({"select": cfg.train.select, "selected_epoch": str(result.selected.get("epoch", "")),
                              "test_skipped": str(result.test.get("skipped", 0))})
            best = best_val_epoch(result.history, cfg.train.monitor)
            if best is not None:  # recorded beside the selected epoch; never used to pick the test score
                tracker.set_tags({"best_val_epoch": str(best[0]), f"best_val_{cfg.train.monitor}": f"{best[1]:.4f}"})
            if result.selected.get(f"val/{cfg.train.monitor}") is not None:
                tracker.log_metrics({f"selected/val/{k[4:]}": v for k, v in result.selected.items() if k.startswith("val/")})
            if cfg.tracking.log_checkpoint:
                tracker.log_artifact(result.checkpoint, "checkpoints")
            tracker.log_artifact(run_dir / "history.json")
            tracker.log_artifact(run_dir / "test_metrics.json")
            tracker.log_artifact(run_dir / "test_samples.json")
            if (run_dir / "val_videos.json").is_file():
                tracker.log_artifact(run_dir / "val_videos.json")
            if cfg.tracking.overlays and track and not cfg.train.eval_only:
                from lvas.engine.checkpoint import model_from_checkpoint

                from lvas.data import build_dataset

                _, chosen_model, vocab = model_from_checkpoint(load_checkpoint(result.checkpoint))
                test_set = build_dataset(cfg, cfg.data.test_split, vocab=vocab)
                log_overlays(tracker, chosen_model, test_set, cfg, cfg.tracking.overlays, run_dir / "overlays",
                             step=int(result.selected.get("epoch", 0) or 0))
        return result, tracker.run_id


@contextlib.contextmanager
def _holding(run_dir: Path, resume: bool):
    """This process's exclusive hold on ``run_dir`` (one training per folder), temporaries of killed
    writes removed; a folder held by another live training, or one with a run not asked to be resumed,
    raises a ConfigError."""
    from lvas.liveness import Busy, clean_tmp, exclusive

    try:
        with exclusive(run_dir / ".lock"):
            if not resume and (run_dir / "last.pt").is_file():
                raise ConfigError(f"{run_dir} already holds a run of this config: add --resume to continue it, "
                                  f"or --run-dir for a new one (nothing is overwritten)")
            clean_tmp(run_dir)
            yield
    except Busy as e:
        raise ConfigError(f"{run_dir}: another training of this folder is running ({e.owner}); wait for it, or "
                          f"give --run-dir for a separate run") from None


def _check_same_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    """A folder holding checkpoints of another config is never continued with this one."""
    import yaml

    saved = run_dir / "config.yaml"
    if not saved.is_file() or not any((run_dir / f).is_file() for f in ("last.pt", "model.pt")):
        return
    try:
        before = yaml.safe_load(saved.read_text())
    except yaml.YAMLError:
        return
    from lvas.config import config_diff, result_config

    if not isinstance(before, dict):
        return
    old, new = result_config(before), result_config(saved_dict(cfg))
    shared = set(old) & set(new)  # keys a newer lvas added are not a change of config
    diff = config_diff({k: old[k] for k in shared}, {k: new[k] for k in shared})
    if diff:
        raise ConfigError(f"{run_dir}: holds a run of another config ({'; '.join(diff[:4])}"
                          f"{' ...' if len(diff) > 4 else ''}); give --run-dir for this one")
