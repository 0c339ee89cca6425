"""How a model is trained (``train.recipe``): ``joint``, or the paper's ``two_stage`` (§4.2).

A recipe is a registered class whose ``train(ctx)`` returns the :class:`~lvas.engine.loop.FitResult`
of the model to score; the test split is scored by the caller afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch

from lvas.config import ConfigError, ExperimentConfig, config_hash, replace, to_dict
from lvas.engine.checkpoint import load_checkpoint
from lvas.engine.loop import Context, FitResult, Stage, fit, log_epoch
from lvas.engine.setup import dist_info, seed_everything
from lvas.liveness import file_lock, write_atomic
from lvas.registry import RECIPES
from lvas.settings import PositiveFloat, PositiveInt


def build(cfg: ExperimentConfig, vocab) -> torch.nn.Module:
    """The config's model, seeded by its seed, GloVe rows cached beside the data."""
    from lvas.models import build_model

    seed_everything(cfg.seed)
    return build_model(cfg, vocab=vocab.itos, cache_dir=str(Path(cfg.data.root) / ".lvas_cache"))


@RECIPES.register("joint")
class Joint:
    """Every part trained together from the start (or from ``train.init_checkpoint``)."""

    def train(self, ctx: Context, init: dict | None = None) -> FitResult:
        model = build(ctx.cfg, ctx.splits.vocab)
        if init is not None:
            model.load_state_dict(init["model"])
        return fit(ctx, model, epochs=ctx.cfg.train.epochs, lr=ctx.cfg.train.lr)


@RECIPES.register("two_stage")
class TwoStage:
    """The paper's recipe (§4.2): each network trained alone, then both frozen under a fresh decoder.

    (1) The spatial and the temporal network, each trained alone for ``train.epochs``; (2) both frozen with everything they were trained with, a fresh decoder
    trained for ``stage2_epochs`` at ``stage2_lr``. Stage-1 networks are cached by the hash of their
    own config under ``stage1_cache`` (default: the run folder), so rows that share one train it once;
    a one-branch model under this recipe *is* its stage-1 network (Table 3a rows 1-2)."""

    def __init__(self, *, stage2_epochs: PositiveInt = 4, stage2_lr: PositiveFloat = 5e-4,
                 stage1_cache: str | None = None) -> None:
        self.epochs, self.lr, self.cache = stage2_epochs, stage2_lr, stage1_cache

    def train(self, ctx: Context, init: dict | None = None) -> FitResult:
        cfg = ctx.cfg
        root = Path(self.cache) if self.cache else ctx.run_dir / "stage1"
        n1 = cfg.train.epochs  # each stage-1 network's epochs
        if cfg.model.mode != "both":
            d1 = self._stage1(ctx, cfg.model.mode, root, "", Stage(cfg.model.mode, 1, 1, 0, n1))
            for name in ("model.pt", "last.pt", "history.json"):
                _link_or_copy(d1 / name, ctx.run_dir / name)
            return FitResult(ctx.run_dir, ctx.run_dir / "model.pt", ctx.run_dir / "last.pt",
                             json.loads((ctx.run_dir / "history.json").read_text()))
        total = 2 * n1 + self.epochs
        stage1 = {b: self._stage1(ctx, b, root, f"stage1_{b}/", Stage(b, i + 1, 3, i * n1, total)) / "model.pt"
                  for i, b in enumerate(("spatial", "temporal"))}
        model = build(cfg, ctx.splits.vocab)
        frozen = assemble_stage2(model, {b: load_checkpoint(p)["model"] for b, p in stage1.items()})
        trainable = [p for p in model.parameters() if p.requires_grad]
        ctx = dataclasses.replace(ctx, stage=Stage("fusion and decoder", 3, 3, 2 * n1, total))
        return fit(ctx, model, epochs=self.epochs, lr=self.lr, trainable=trainable, frozen=frozen)

    def _stage1(self, ctx: Context, branch: str, root: Path, prefix: str, stage: Stage) -> Path:
        """Train (or find in the cache) the stage-1 network of ``branch``; returns its folder. On a
        cache hit its per-epoch history is logged to this run too, so every run shows its curves."""
        c1 = stage1_config(ctx.cfg, branch)
        d1 = root / f"{branch}-{stage1_key(ctx.cfg, branch)}"
        done = d1 / "done.json"
        d1.mkdir(parents=True, exist_ok=True)
        rank, world = dist_info()
        trained = False
        # two trials needing the same network: one trains, one waits (under torchrun the ranks
        # train it together, so they take no lock)
        with file_lock(d1 / ".lock") if world == 1 else contextlib.nullcontext():
            if not done.is_file():
                sub = Context(c1, d1, ctx.splits, ctx.selector, ctx.tracker, True, ctx.progress, ctx.epoch_callback,
                              prefix, stage)
                r1 = fit(sub, build(c1, ctx.splits.vocab), epochs=c1.train.epochs, lr=c1.train.lr)
                trained = True
                if rank == 0:
                    write_atomic(done, json.dumps(r1.selected))
        if ctx.tracker is not None:
            ctx.tracker.set_tags({f"stage1_{branch}_cache": str(d1)})
            if not trained:
                for record in json.loads((d1 / "history.json").read_text()):
                    log_epoch(ctx.tracker, record, prefix)
        return d1


def stage1_config(cfg: ExperimentConfig, branch: str) -> ExperimentConfig:
    """The single-branch network stage 1 of the two-stage recipe trains."""
    return replace(cfg, {"model.mode": branch, "model.fusion": "add",  # unused with one branch; fixed for the cache
                         "train.recipe": "joint", "name": f"{cfg.name}-stage1-{branch}"})


def stage1_key(cfg: ExperimentConfig, branch: str) -> str:
    """Cache key of a stage-1 network: everything that changes its result, nothing else."""
    c = stage1_config(cfg, branch)
    train = {k: v for k, v in to_dict(c.train).items() if k not in ("out_dir", "recipe")}
    return config_hash({"seed": c.seed, "model": to_dict(c.model), "data": to_dict(c.data), "train": train})


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


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
        for k in (k for k in own if k.startswith(prefixes)):
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
