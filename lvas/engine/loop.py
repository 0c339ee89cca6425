"""The training loop: epochs of optimiser steps, then the hooks of the epoch's end.

:func:`fit` trains one model for a number of epochs and never reads the test split. After every
epoch it runs, in order: validation (when the selector holds a split out), selection and
checkpointing (``model.pt`` when the selector takes the epoch, ``last.pt`` always, atomically),
logging (``history.json``, MLflow) and the caller's epoch callback (pruning). A ``last.pt`` in the
run folder is resumed: same data order per epoch (seeded by ``seed`` and the epoch), same
optimizer and scheduler state, hence the same result as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from lvas import signals
from lvas.config import ConfigError, ExperimentConfig
from lvas.engine import resources
from lvas.engine.checkpoint import load_checkpoint, save_checkpoint
from lvas.engine.evaluate import evaluate
from lvas.engine.inference import clip_targets, forward, training_pairs
from lvas.models.losses.segmentation import build_loss
from lvas.engine.optim import build_optimizer
from lvas.engine.batching import BatchPlan, MicroBatchSampler, plan_batches
from lvas.engine.setup import Splits, amp_enabled, cpu_bf16_guard, dist_info, epoch_order, loader, resolve_device
from lvas.liveness import write_atomic
from lvas.models.base import to_channels_last

@dataclass(frozen=True)
class Stage:
    """Where a training is within its recipe: stage ``index`` of ``count`` (``name``: what it trains),
    ``before`` epochs of earlier stages, ``total`` epochs in every stage (what a progress line and an
    ETA count)."""

    name: str = ""
    index: int = 1
    count: int = 1
    before: int = 0
    total: int = 0

    def text(self, epoch: int, epochs: int) -> str:
        """``stage 2/3 (temporal) epoch 3/8`` (``epoch 3/8`` for a one-stage training)."""
        head = f"stage {self.index}/{self.count} ({self.name}) " if self.count > 1 else ""
        return f"{head}epoch {epoch}/{epochs}"


# called after every epoch with (epoch within this stage, its metrics, the stage)
EpochCallback = Callable[[int, dict[str, float], Stage], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class Context:
    """One training: its config, folder, splits, selector, tracker and how it reports progress.
    ``prefix`` names its curves in MLflow (``stage1_spatial/`` for a stage-1 network)."""

    cfg: ExperimentConfig
    run_dir: Path
    splits: Splits
    selector: Any
    tracker: Any = None
    resume: bool = True
    progress: bool = True
    epoch_callback: EpochCallback | None = None
    prefix: str = ""
    stage: Stage | None = None  # the recipe's stage (None: one stage of train.epochs)


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


@dataclass
class _Run:
    """What the loop holds while it trains: model and its wrapper, optimiser, schedule, loss, loaders."""

    ctx: Context
    model: torch.nn.Module
    net: torch.nn.Module
    device: torch.device
    params: list
    optimizer: Any
    scheduler: Any
    loss_fn: Any
    sampler: MicroBatchSampler
    train_loader: Any
    val_loader: Any
    frozen: list
    amp: bool
    plan: BatchPlan
    history: list = field(default_factory=list)
    chosen: dict = field(default_factory=dict)


def fit(ctx: Context, model: torch.nn.Module, *, epochs: int, lr: float, trainable: list | None = None,
        frozen: list = ()) -> FitResult:
    """Train ``model`` for ``epochs`` in ``ctx.run_dir`` (see the module docstring).

    Args:
        trainable: the parameters to optimise (default: every parameter that requires a gradient).
        frozen: modules kept in eval mode (stage 2's frozen branches).
    """
    run = _setup(ctx, model, lr, trainable, frozen)
    start = _resume(run)
    rank = dist_info()[0]
    for epoch in range(start, epochs):
        record = _train_epoch(run, epoch, epochs)
        if rank > 0:  # rank 0 evaluates, checkpoints and logs; the others wait for it
            torch.distributed.barrier()
            continue
        metrics = _validate(run, record)
        for hook in (_select_and_checkpoint, _log, _report_progress):
            hook(run, epoch, epochs, record, metrics)
        if dist_info()[1] > 1:
            torch.distributed.barrier()
        if ctx.epoch_callback is not None:
            ctx.epoch_callback(epoch + 1, metrics, ctx.stage or Stage(total=epochs))
    return FitResult(ctx.run_dir, ctx.run_dir / "model.pt", ctx.run_dir / "last.pt", run.history, run.chosen)


def _setup(ctx: Context, model: torch.nn.Module, lr: float, trainable, frozen) -> _Run:
    cfg, t = ctx.cfg, ctx.cfg.train
    rank, world = dist_info()
    device = resolve_device(t.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    workers = resources.apply(cfg, device).workers
    model.to(device, torch.float64 if t.precision == "float64" else None)
    if t.channels_last:  # NHWC 2-D convolutions: faster on oneDNN (CPU) and cuDNN alike
        to_channels_last(model)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if t.freeze_bn:
        for m in norms:
            m.requires_grad_(False)
    params = [p for p in (trainable if trainable is not None else model.parameters()) if p.requires_grad]
    optimizer, scheduler = build_optimizer(cfg, lr_groups(model, params, lr, t.encoder_lr_mult), lr)
    net = model
    if world > 1:  # DistributedDataParallel under torchrun; BatchNorm over the global batch (train.sync_bn)
        if t.sync_bn:
            from lvas.engine.syncbn import convert_sync_bn

            net = model = convert_sync_bn(model, device)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    plan = plan_batches(t.batch_size, world, t.max_per_device_batch, t.accumulate)
    n = len(ctx.splits.train)
    if n == 0:
        raise ConfigError(f"data.root: the {cfg.data.train_split} split of {cfg.data.root} has no samples")
    limit = t.limit_batches * t.batch_size
    sampler = MicroBatchSampler(lambda epoch: epoch_order(n, cfg.seed, epoch, limit), plan, rank, t.drop_last)
    train_loader = loader(ctx.splits.train, cfg, workers=workers, batch_sampler=sampler)
    if len(train_loader) == 0:
        raise ConfigError(f"train.drop_last: the {n} training samples make no full batch of {t.batch_size}")
    val_loader = loader(ctx.splits.val, cfg, workers=workers) if ctx.splits.val is not None else None
    # BatchNorm layers whose weights are all frozen (e.g. ACGA's I3D below Mixed_4f, or every one with
    # train.freeze_bn) keep their running statistics
    frozen_norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                    and (t.freeze_bn or (m.weight is not None and not any(p.requires_grad for p in m.parameters())))]
    return _Run(ctx, model, net, device, params, optimizer, scheduler, build_loss(cfg), sampler, train_loader,
                val_loader, [*frozen, *frozen_norms], amp_enabled(t.amp, device) and t.precision != "float64", plan)


def lr_groups(model: torch.nn.Module, params: list, lr: float, encoder_mult: float) -> list:
    """``params`` as the optimiser takes them: one list, or with ``train.encoder_lr_mult`` != 1 two
    groups, the visual encoders' (``spatial.*``, ``temporal.*``) at ``lr * encoder_mult``."""
    if encoder_mult == 1.0:
        return params
    names = {id(p): n for n, p in model.named_parameters()}
    enc = [p for p in params if names.get(id(p), "").startswith(("spatial.", "temporal."))]
    rest = [p for p in params if not names.get(id(p), "").startswith(("spatial.", "temporal."))]
    return [g for g in ({"params": rest, "lr": lr}, {"params": enc, "lr": lr * encoder_mult}) if g["params"]]


def _resume(run: _Run) -> int:
    """Continue from ``last.pt`` when asked and present; returns the first epoch to train."""
    ctx = run.ctx
    last = ctx.run_dir / "last.pt"
    if not (ctx.resume and last.is_file()):
        return 0
    state = load_checkpoint(last)
    for key in ("model", "optimizer", "scheduler", "epoch", "history"):
        if key not in state:
            raise ConfigError(f"{last}: not a resumable checkpoint (it has no {key!r}: a selected model.pt copied "
                              f"over last.pt?); remove it to start again, or give another --run-dir")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.history, run.chosen = state["history"], state.get("selected", {})
    if ctx.tracker is not None and dist_info()[0] == 0:
        # an epoch is checkpointed before it is logged: a run killed in between logs it now, once
        logged = ctx.tracker.logged_steps("train_loss", ctx.prefix)
        for record in run.history:
            if record["epoch"] not in logged:
                log_epoch(ctx.tracker, record, ctx.prefix)
    return state["epoch"] + 1


def _train_epoch(run: _Run, epoch: int, epochs: int) -> dict[str, Any]:
    ctx, t = run.ctx, run.ctx.cfg.train
    run.sampler.set_epoch(epoch)
    run.model.train()
    for m in run.frozen:
        m.eval()
    total, count, skipped, step = 0.0, 0, 0, 0
    world = dist_info()[1]
    micro = run.sampler.batches()  # what the loader yields, in order: indices, loss weight, step boundary
    bar = tqdm(run.train_loader, desc=f"{ctx.prefix}epoch {epoch + 1}/{epochs}", unit="batch",
               disable=not ctx.progress or dist_info()[0] > 0, leave=False)
    run.optimizer.zero_grad(set_to_none=True)
    for batch, mb in zip(bar, micro):
        signals.check()
        skipped += batch["skipped"]
        if "clip" not in batch:
            continue
        # gradients are exchanged once per optimiser step, after its last micro-batch
        with run.net.no_sync() if world > 1 and not mb.last else contextlib.nullcontext(), \
                cpu_bf16_guard(run.device, run.amp):
            outputs = forward(run.net, batch, run.device, run.amp)
            if getattr(run.loss_fn, "per_clip", False):  # matched across a clip's frames (referformer)
                loss = run.loss_fn(outputs, clip_targets(outputs, batch, run.device))
            else:
                loss = run.loss_fn(*training_pairs(outputs, batch, run.device))
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"training diverged: loss is {loss.item()} at epoch {epoch + 1}, "
                                       f"step {step + 1} (lower train.lr or check the data)")
            (loss * mb.weight if mb.weight != 1.0 else loss).backward()  # the step's mean (lvas.engine.batching)
        if mb.last:
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(run.params, t.grad_clip)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
            step += 1
        n = batch["clip"].shape[0] if mb.weight > 0 else 0
        total += loss.item() * n
        count += n
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
    if world > 1:  # the epoch's loss over every process's samples
        sums = torch.tensor([total, count], dtype=torch.float64, device=run.device)
        torch.distributed.all_reduce(sums)
        total, count = sums[0].item(), int(sums[1].item())
    lr_used = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    return {"epoch": epoch + 1, "train_loss": total / max(count, 1), "lr": lr_used, "train_skipped": skipped}


def _validate(run: _Run, record: dict) -> dict[str, float]:
    """Score the validation split (when there is one); its metrics join the epoch's record."""
    if run.val_loader is None:
        return {}
    ev = evaluate(run.model, run.val_loader, run.ctx.cfg.train.protocol, run.device, amp=run.amp,
                  progress=run.ctx.progress)
    record.update({"val_skipped": ev["skipped"], **{f"val/{k}": v for k, v in ev["metrics"].items()}})
    return ev["metrics"]


def _select_and_checkpoint(run: _Run, epoch: int, epochs: int, record: dict, metrics: dict) -> None:
    ctx = run.ctx
    run.history.append(record)
    if ctx.selector.better(metrics, run.chosen, epoch, epochs):
        run.chosen = {"epoch": epoch + 1, "select": ctx.cfg.train.select.name,
                      **{f"val/{k}": v for k, v in metrics.items()}}
        save_checkpoint(ctx.run_dir / "model.pt", cfg=ctx.cfg, model=run.model, vocab=ctx.splits.vocab.itos,
                        epoch=epoch, selected=run.chosen)
    save_checkpoint(ctx.run_dir / "last.pt", cfg=ctx.cfg, model=run.model, vocab=ctx.splits.vocab.itos, epoch=epoch,
                    history=run.history, selected=run.chosen, optimizer=run.optimizer.state_dict(),
                    scheduler=run.scheduler.state_dict())
    write_atomic(ctx.run_dir / "history.json", json.dumps(run.history, indent=1))


def _log(run: _Run, epoch: int, epochs: int, record: dict, metrics: dict) -> None:
    if run.ctx.tracker is not None:  # after the checkpoint: a kill in between is caught up on resume, not repeated
        log_epoch(run.ctx.tracker, record, run.ctx.prefix)


def _report_progress(run: _Run, epoch: int, epochs: int, record: dict, metrics: dict) -> None:
    if run.ctx.progress:
        p = run.ctx.cfg.train.protocol.name
        shown = (f"  val {p} AP {metrics['AP']:.1f}  oIoU {metrics['oIoU']:.1f}  mIoU {metrics['mIoU']:.1f}"
                 if metrics else "")
        tqdm.write(f"{run.ctx.prefix}epoch {epoch + 1}: loss {record['train_loss']:.4f}{shown}")


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
