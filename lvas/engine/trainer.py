"""One tracked training: ``lvas train`` and every sweep trial run :func:`train_experiment`.

It holds the run folder, opens (or takes up again) the MLflow run, logs what the run is (resolved
config, unused keys, FLOPs, floating-point path), runs the config's recipe (:mod:`lvas.engine.recipes`
over :mod:`lvas.engine.loop`), scores the selected model once on the test split, and logs the
results, checkpoint and a few qualitative overlays. A crash marks the run FAILED with its traceback.

No selection on the test split: the epoch is chosen by ``train.select`` (:mod:`lvas.engine.selection`);
the test split is read once, after training.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from lvas import catalogue
from lvas.config import (UNUSED, ConfigError, ExperimentConfig, config_diff, config_hash, redact, result_config,
                         safe_name, saved_dict, to_yaml, unread_keys)
from lvas.data import build_dataset, require_masks
from lvas.engine import resources
from lvas.engine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from lvas.engine.evaluate import evaluate
from lvas.engine.inference import forward, masks, scored_frames
from lvas.engine.loop import Context, EpochCallback, FitResult, TrainingDiverged, best_val_epoch, is_counter
from lvas.engine.overlays import overlay_image
from lvas.engine.selection import build_selector
from lvas.engine.setup import (Splits, dataset_index, dist_info, init_distributed, loader, make_splits,
                               resolve_device, run_dir_for)
from lvas.liveness import replace_atomic, write_atomic
from lvas.models.base import to_channels_last
from lvas.models.model import model_plan
from lvas.registry import RECIPES

__all__ = ["TrackOptions", "TrainingDiverged", "train_experiment", "train_model", "run_dir_for"]


@dataclass
class TrackOptions:
    """Where and how a training is recorded in MLflow.

    ``uri`` (default: ``tracking.uri``, MLFLOW_TRACKING_URI, ``sqlite:///mlflow.db``); ``experiment``
    (default: ``tracking.experiment`` or the config's name); ``parent_run_id`` (a sweep's); ``run_name``;
    ``tags``; ``description`` of the run and ``experiment_description`` (when the experiment has none);
    ``active``: False trains without MLflow."""

    uri: str | None = None
    experiment: str | None = None
    parent_run_id: str | None = None
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    experiment_description: str = ""
    active: bool = True


# --------------------------------------------------------------------------- training and the test split


def built_slots(cfg: ExperimentConfig) -> set[str]:
    """The config slots a run builds: the model's (lvas.models.model.model_plan) and the training's."""
    return set(model_plan(cfg)) | {"train.recipe", "train.loss", "train.optimizer", "train.scheduler", "train.select",
                                   "train.protocol", "data.dataset"}


def train_model(cfg: ExperimentConfig, run_dir: Path, *, tracker=None, resume: bool = True, progress: bool = True,
                epoch_callback: EpochCallback | None = None) -> FitResult:
    """Run the config's recipe in ``run_dir``, then score the selected model on the test split."""
    init = _init_state(cfg)
    if cfg.train.eval_only:
        if init is None:
            raise ConfigError("train.eval_only: needs train.init_checkpoint (a checkpoint or sweep:<file>#<label>)")
        return evaluate_only(cfg, run_dir, init, progress)
    vocab = None
    if init is not None:
        from lvas.data.vocab import vocabulary

        vocab = vocabulary(cfg.model.text, init["vocab"])
    selector = build_selector(cfg)
    splits = make_splits(cfg, selector, vocab)
    if tracker is not None:
        _log_datasets(tracker, cfg, splits)
    run_dir.mkdir(parents=True, exist_ok=True)
    if splits.held:
        write_atomic(run_dir / "val_videos.json", json.dumps(splits.held, indent=0))
    ctx = Context(cfg, run_dir, splits, selector, tracker, resume, progress, epoch_callback)
    recipe = RECIPES.build(cfg.train.recipe.name, cfg.train.recipe.settings())
    return test_metrics(cfg, recipe.train(ctx, init), splits.test, progress)


def _init_state(cfg: ExperimentConfig) -> dict | None:
    if not cfg.train.init_checkpoint:
        return None
    from lvas.sweepspec import resolve_checkpoint

    return load_checkpoint(resolve_checkpoint(cfg.train.init_checkpoint, seed=cfg.seed))


def test_metrics(cfg: ExperimentConfig, fit_result: FitResult, test_set, progress: bool = True,
                 model: torch.nn.Module | None = None) -> FitResult:
    """Score the selected checkpoint once on the test split; written to ``test_metrics.json``,
    ``test_protocols.json`` (every protocol) and ``test_samples.json`` (per scored frame).

    ``model``: the selected model when the caller already holds it (else rebuilt from the checkpoint).
    """
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
    ev = evaluate(model, loader(test_set, cfg, workers=workers), cfg.train.protocol, device, progress=progress,
                  every_protocol=True)
    fit_result.test = {"epoch": fit_result.selected.get("epoch", 0), **ev["metrics"], "skipped": ev["skipped"]}
    fit_result.protocols = ev["by_protocol"]
    d = fit_result.run_dir
    write_atomic(d / "test_protocols.json", json.dumps(ev["by_protocol"], indent=1))
    write_atomic(d / "test_metrics.json", json.dumps(fit_result.test, indent=1))
    write_atomic(d / "test_samples.json", json.dumps(
        {"protocol": cfg.train.protocol.name, "split": cfg.data.test_split, "samples": ev["samples"]}))
    return fit_result


def evaluate_only(cfg: ExperimentConfig, run_dir: Path, state: dict, progress: bool = True) -> FitResult:
    """Evaluate a trained checkpoint on the config's test split (e.g. Table 2: A2D model on J-HMDB)."""
    trained, model, vocab = model_from_checkpoint(state)
    test = build_dataset(cfg, cfg.data.test_split, vocab=vocab)
    require_masks(test)
    run_dir.mkdir(parents=True, exist_ok=True)
    selected = {"epoch": 0, "select": "given checkpoint"}
    path = save_checkpoint(run_dir / "model.pt", cfg=trained, model=model, vocab=vocab.itos, epoch=0, selected=selected)
    write_atomic(run_dir / "history.json", "[]")
    return test_metrics(cfg, FitResult(run_dir, path, path, [], selected), test, progress, model=model)


def _log_datasets(tracker, cfg: ExperimentConfig, splits: Splits) -> None:
    """The run's dataset inputs (name/split, root, sample count, digest of the sample index)."""
    from lvas.tracking import dataset_digest

    for ds, split, context in ((splits.train, cfg.data.train_split, "train"), (splits.val, "val", "validation"),
                               (splits.test, cfg.data.test_split, "test")):
        if ds is not None:
            tracker.log_dataset(dataset_digest(dataset_index(ds), cfg.data.dataset.name, split, cfg.data.root), context)


@torch.no_grad()
def log_overlays(tracker, model, test_set, cfg: ExperimentConfig, n: int, out_dir: Path, step: int = 0) -> list[Path]:
    """Qualitative overlays of the first ``n`` test samples (after training; nothing is selected on
    them): PNGs in ``out_dir`` and MLflow images ``overlay_<i>`` at ``step`` (the selected epoch)."""
    from lvas.data import collate

    paths = []
    model.eval()
    device = next(model.parameters()).device
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(min(n, len(test_set))):
        item = test_set[i]
        if item is None:
            continue
        batch = collate([item])
        lg, gt, meta = next(scored_frames(forward(model, batch, device), batch))
        pred, truth = masks(lg, gt, meta, cfg.train.protocol)
        # the sample's position in the name: two queries on one frame are two files
        p = out_dir / f"overlay_{i:02d}_{safe_name(str(meta['video']))}_{int(meta['frame']):05d}.png"
        image = overlay_image(item, pred, truth)
        replace_atomic(p, lambda tmp: image.save(tmp, format="PNG"))
        paths.append(p)
        tracker.log_image(image, key=f"overlay_{i:02d}", step=step)
    return paths


# --------------------------------------------------------------------------- the tracked run


def train_experiment(cfg: ExperimentConfig, run_dir: str | Path | None = None, *, resume: bool = False,
                     track: TrackOptions | None = None, progress: bool = True,
                     epoch_callback: EpochCallback | None = None) -> tuple[FitResult, str | None]:
    """Train and evaluate one config inside an MLflow run (see the module docstring).

    Returns:
        (FitResult, MLflow run id or None).
    """
    from lvas.tracker import Tracker
    from lvas.tracking import quiet_mlflow, resolve_uri, reusable_run

    track = track or TrackOptions()
    init_distributed()
    rank = dist_info()[0]
    scale = distribution_tags(cfg)  # every rank takes part (it gathers the device names)
    active, progress = track.active and rank == 0, progress and rank == 0
    run_dir = Path(run_dir) if run_dir is not None else run_dir_for(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _holding(run_dir, resume) if rank == 0 else contextlib.nullcontext():  # rank 0 holds it for all ranks
        if rank == 0:
            _check_same_config(cfg, run_dir)
            write_atomic(run_dir / "config.yaml", to_yaml(cfg))
        id_file = run_dir / "mlflow_run_id"
        uri = resolve_uri(track.uri, cfg.tracking.uri)
        experiment = track.experiment or cfg.tracking.experiment or cfg.name
        run_id, forked = reusable_run(uri, experiment, run_dir, id_file, resume, config_hash(cfg)) if active \
            else (None, None)
        if forked and forked.startswith("changed:"):
            print(f"note: MLflow run {forked[8:]} of {run_dir} was recorded with another config; it keeps its "
                  f"parameters and how it ended, and this training starts a new run", file=sys.stderr, flush=True)
            forked = None
        elif forked and progress:
            print(f"note: {run_dir} was copied from the folder of MLflow run {forked}; that run is left as it is and "
                  f"this folder's training goes on in a new run", file=sys.stderr, flush=True)
        tracker = Tracker(uri, experiment, run_name=track.run_name or cfg.name, run_id=run_id,
                          parent_run_id=track.parent_run_id, tags={**_run_tags(cfg, run_dir, track, forked), **scale},
                          system_metrics=cfg.tracking.system_metrics, active=active,
                          experiment_description=track.experiment_description)
        with quiet_mlflow(), tracker:
            if tracker.run_id and rank == 0:
                write_atomic(id_file, tracker.run_id)
            if not (resume and run_id):  # a new run, or one killed before its first checkpoint: (re)log what it is
                _log_setup(tracker, cfg)
            result = train_model(cfg, run_dir, tracker=tracker, resume=resume, progress=progress,
                                 epoch_callback=epoch_callback if rank == 0 else None)
            if rank > 0:
                return result, None
            _log_results(tracker, cfg, run_dir, result)
            if cfg.tracking.overlays and active and not cfg.train.eval_only:
                _, chosen, vocab = model_from_checkpoint(load_checkpoint(result.checkpoint))
                log_overlays(tracker, chosen, build_dataset(cfg, cfg.data.test_split, vocab=vocab), cfg,
                             cfg.tracking.overlays, run_dir / "overlays", step=int(result.selected.get("epoch", 0) or 0))
        return result, tracker.run_id


def distribution_tags(cfg: ExperimentConfig) -> dict[str, str]:
    """How the run was spread (``dist.*`` tags): world size, per-device batch, accumulation steps,
    micro-batch, effective (global) batch, learning rate, synchronised BatchNorm and every process's
    device. Runs that agree here saw the same optimisation, whatever machines ran them."""
    from lvas.engine.batching import plan_batches

    rank, world = dist_info()
    device = resolve_device(cfg.train.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({resources.cpu_model()})"
    names = [name]
    if world > 1:
        names = [None] * world
        torch.distributed.all_gather_object(names, name)
    t = cfg.train
    plan = plan_batches(t.batch_size, world, t.max_per_device_batch, t.accumulate)
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return {**{k: str(v) for k, v in plan.as_params().items()}, "dist.lr": f"{t.lr:g}",
            "dist.sync_bn": str(bool(t.sync_bn and world > 1)),
            "dist.devices": ", ".join(f"{c} x {n}" for n, c in counts.items())}


def _run_tags(cfg: ExperimentConfig, run_dir: Path, track: TrackOptions, forked: str | None) -> dict[str, str]:
    from lvas.tracking import NOTE_TAG, git_commit, git_dirty

    device = resolve_device(cfg.train.device)
    return {"config_hash": config_hash(cfg), "git_commit": git_commit(), "git_dirty": git_dirty(),
            **resources.float_path(device, resources.plan(cfg, device).threads),
            "protocol": cfg.train.protocol.name, "dataset": cfg.data.dataset.name, "recipe": cfg.train.recipe.name,
            "run_dir": str(run_dir.resolve()), **({NOTE_TAG: redact(track.description)} if track.description else {}),
            **track.tags, **({"forked_from": forked} if forked else {})}


def _log_setup(tracker, cfg: ExperimentConfig) -> None:
    """What the run is: its parameters (the keys it does not read shown as unused), its config, its cost."""
    from lvas.flops import measure_config_cached
    from lvas.tracking import flatten

    unused = unread_keys(cfg, built_slots(cfg))
    tracker.log_params({k: UNUSED if k in unused else v for k, v in flatten(saved_dict(cfg)).items()})
    tracker.log_text(to_yaml(cfg), "config.yaml")
    try:
        fl = measure_config_cached(cfg)
        tracker.log_dict({"frames": fl.frames, "size": fl.size, "gmacs": fl.gmacs, "gflops_2per_mac": fl.gflops,
                          "params": fl.params, "parts_gmacs": {k: v / 1e9 for k, v in fl.parts.items()}}, "flops.json")
        tracker.log_metrics({"gmacs": fl.gmacs, "params_m": fl.params / 1e6})
    except Exception as e:  # noqa: BLE001 - FLOPs are informative; never fail a run on them
        tracker.set_tags({"flops_error": str(e)[:500]})


def _log_results(tracker, cfg: ExperimentConfig, run_dir: Path, result: FitResult) -> None:
    tracker.log_metrics({f"test/{k}": v for k, v in result.test.items()
                         if k not in ("epoch", "skipped") and not is_counter(k)})
    # the headline, first in the UI's metric list: the selected model on the test split, main protocol
    tracker.log_metrics({k: result.test[k] for k in ("AP", "mIoU", "oIoU", "JF") if k in result.test})
    tracker.set_tags({f"test_{k.replace('/', '_')}": str(v) for k, v in result.test.items() if is_counter(k)})
    tracker.log_metrics({f"protocol/{p}/{k}": v for p, m in result.protocols.items()
                         for k, v in m.items() if k in catalogue.METRICS})
    tracker.set_tags({"select": cfg.train.select.name, "selected_epoch": str(result.selected.get("epoch", "")),
                      "test_skipped": str(result.test.get("skipped", 0))})
    monitor = getattr(cfg.train.select, "monitor", None) or "mIoU"
    best = best_val_epoch(result.history, monitor)
    if best is not None:  # recorded beside the selected epoch; never used to pick the test score
        tracker.set_tags({"best_val_epoch": str(best[0]), f"best_val_{monitor}": f"{best[1]:.4f}"})
    if result.selected.get(f"val/{monitor}") is not None:
        tracker.log_metrics({f"selected/val/{k[4:]}": v for k, v in result.selected.items() if k.startswith("val/")})
    if cfg.tracking.log_checkpoint:
        tracker.log_artifact(result.checkpoint, "checkpoints")
    for name in ("history.json", "test_metrics.json", "test_samples.json", "val_videos.json"):
        if (run_dir / name).is_file():
            tracker.log_artifact(run_dir / name)


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
    saved = run_dir / "config.yaml"
    if not saved.is_file() or not any((run_dir / f).is_file() for f in ("last.pt", "model.pt")):
        return
    try:
        before = yaml.safe_load(saved.read_text())
        old = result_config(before) if isinstance(before, dict) else None
    except (yaml.YAMLError, ValueError):
        return
    if old is None:
        return
    diff = config_diff(old, result_config(cfg))
    if diff:
        raise ConfigError(f"{run_dir}: holds a run of another config ({'; '.join(diff[:4])}"
                          f"{' ...' if len(diff) > 4 else ''}); give --run-dir for this one")

