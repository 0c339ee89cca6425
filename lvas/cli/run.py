"""``lvas train``, ``lvas eval``, ``lvas predict``."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from pathlib import Path
from typing import Iterator

from lvas import catalogue
from lvas.config import ConfigError, shown

MAX_MLFLOW_NAME = 250  # an experiment or run name every MLflow store takes (PostgreSQL: VARCHAR(256))
# keys an evaluation may change: where the data is and how fast it runs, never what was trained
EVAL_OVERRIDABLE = ("data.", "train.protocol", "train.batch_size", "train.device", "train.threads",
                    "train.channels_last", "train.amp", "tracking.")


def cmd_train(args: argparse.Namespace) -> int:
    from lvas.config import load_config
    from lvas.engine.trainer import TrackOptions, TrainingDiverged, run_dir_for, train_experiment
    from lvas.tracking import file_description

    cfg = load_config(args.experiment, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else run_dir_for(cfg)
    if args.resume and not (run_dir / "last.pt").is_file():
        raise ConfigError(f"--resume: {run_dir} holds no last.pt to continue from (leave out --resume to start)")
    try:
        tags = json.loads(args.tags or "{}")
    except ValueError as e:
        raise ConfigError(f"--tags: not valid JSON ({e})") from None
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise ConfigError('--tags: expected a JSON object of strings, e.g. \'{"team": "vision"}\'')
    for option, value in (("--experiment-name", args.experiment_name), ("--run-name", args.run_name)):
        if value is not None and (not 1 <= len(value) <= MAX_MLFLOW_NAME or any(ord(c) < 32 for c in value)):
            raise ConfigError(f"{option}: {len(value)} characters; expected 1 to {MAX_MLFLOW_NAME} without control "
                              f"characters (what every MLflow store holds)")
    if args.parent_run_id is not None and not re.fullmatch(r"[0-9a-f]{32}", args.parent_run_id):
        raise ConfigError(f"--parent-run-id: {shown(args.parent_run_id)} is not an MLflow run id (32 hexadecimal digits)")
    about = file_description(args.experiment)
    track = TrackOptions(args.tracking_uri, args.experiment_name, args.parent_run_id, args.run_name, tags,
                         about + (f"\n\nOverrides: `{' '.join(args.overrides)}`" if args.overrides else ""), about)
    try:
        result, run_id = train_experiment(cfg, run_dir, resume=args.resume, track=track, progress=not args.quiet)
    except TrainingDiverged as e:
        print(f"lvas train: {e}", file=sys.stderr)
        return 1
    test = result.test
    if not test:  # a non-zero rank under torchrun
        return 0
    print(f"selected epoch {test.get('epoch')} ({cfg.train.select.name}); test {cfg.train.protocol.name}: "
          + "  ".join(f"{k} {test[k]:.1f}" for k in ("AP", "oIoU", "mIoU")))
    print(f"checkpoint: {result.checkpoint}")
    if run_id:
        print(f"MLflow run: {run_id}")
    return 0


@contextlib.contextmanager
def checkpoint_path(ref: str, tracking_uri: str | None) -> Iterator[Path]:
    """A checkpoint file, or an MLflow run's selected checkpoint downloaded into a temporary folder that
    is removed afterwards (whether or not the download or the command succeeds)."""
    p = Path(ref)
    if p.is_file() or p.suffix == ".pt" or "/" in ref:
        yield p
        return
    from lvas.tracking import downloaded, resolve_uri

    fetch = downloaded(ref, "checkpoints/model.pt", resolve_uri(tracking_uri))
    try:
        local = fetch.__enter__()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - mlflow raises several types for an unknown run
        from lvas.errors import excerpt

        raise ConfigError(f"{ref}: neither a checkpoint file nor an MLflow run with checkpoints/model.pt "
                          f"({excerpt(e, 200, secrets=False)})") from None
    try:  # what goes wrong with the checkpoint itself is said as it is, not as a failed download
        yield local
    finally:
        fetch.__exit__(None, None, None)


def _released(args: argparse.Namespace, path: Path):
    """A checkpoint without an lvas config (a released layout) in the model of ``--config``."""
    from lvas.config import apply_overrides, from_dict, load_raw
    from lvas.data import build_dataset
    from lvas.engine.checkpoint import model_from_released

    cfg = from_dict(apply_overrides(load_raw(args.config), args.overrides))
    vocab = build_dataset(cfg, cfg.data.train_split).vocab
    if cfg.model.text.embedding == "glove_frozen":
        # the release looks every word up in GloVe, with no vocabulary: a fixed table covers the
        # evaluated queries' words too (nothing is learned or chosen from them)
        from lvas.data.vocab import with_words_of

        vocab = with_words_of(vocab, build_dataset(cfg, args.split or cfg.data.test_split, vocab=vocab).queries())
    return cfg, model_from_released(path, cfg, vocab), vocab


def _trained(args: argparse.Namespace, path: Path):
    """An lvas checkpoint: its own config, only where and how fast the evaluation runs changeable."""
    from lvas.config import flatten_dict, to_dict
    from lvas.engine.checkpoint import load_checkpoint, model_from_checkpoint

    cfg, model, vocab = model_from_checkpoint(load_checkpoint(path), path)
    for text in args.overrides:
        key = text.split("=", 1)[0].strip()
        if "=" in text and key and not key.startswith(EVAL_OVERRIDABLE):
            now = flatten_dict(to_dict(cfg)).get(key, "<none>")
            allowed = ", ".join(k + "*" if k.endswith(".") else k for k in EVAL_OVERRIDABLE)
            raise ConfigError(f"{key}: cannot change when evaluating a trained checkpoint (it was trained with "
                              f"{key}={now}); only {allowed} can")
    return cfg, model, vocab


def _import(args: argparse.Namespace) -> None:
    """``--import``: the user's modules a checkpoint's components come from (never imported from the
    checkpoint itself)."""
    from lvas.registry import RegistryError, import_plugins

    try:
        import_plugins(list(args.imports or []), "--import")
    except RegistryError as e:
        raise ConfigError(str(e)) from None


def cmd_eval(args: argparse.Namespace) -> int:
    from lvas.config import apply_values, apply_overrides, from_dict, to_dict
    from lvas.data import build_dataset, require_masks
    from lvas.engine import resources
    from lvas.engine.evaluate import evaluate
    from lvas.engine.setup import loader, resolve_device
    from lvas.models.base import to_channels_last
    from lvas.registry import PROTOCOLS

    _import(args)
    with checkpoint_path(args.checkpoint, args.tracking_uri) as path:
        cfg, model, vocab = _released(args, path) if args.config else _trained(args, path)
    data = to_dict(cfg)
    trained_on = cfg.data.dataset.name
    data = apply_values(data, {k: v for k, v in (("data.dataset", args.dataset), ("data.root", args.root)) if v})
    cfg = from_dict(apply_overrides(data, args.overrides), run_imports=False)
    if not args.split and cfg.data.dataset.name != trained_on:  # another dataset (zero-shot): where it is scored
        from lvas.registry import DATASETS

        args.split = getattr(DATASETS.get(cfg.data.dataset.name).builder, "scored_split", "test")
    device = resolve_device(cfg.train.device)
    workers = resources.apply(cfg, device).workers
    model.to(device)
    if cfg.train.channels_last:
        to_channels_last(model)
    ds = build_dataset(cfg, args.split or cfg.data.test_split, vocab=vocab)
    if len(ds) == 0:
        raise ConfigError(f"--split: the {args.split or cfg.data.test_split} split of {cfg.data.root} has no samples: "
                          f"nothing to score (lvas data check {cfg.data.root} --dataset {cfg.data.dataset.name})")
    batches = loader(ds, cfg, workers=workers)
    protocol = args.protocol or cfg.train.protocol.name
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol: {PROTOCOLS.unknown_message(protocol)}")
    if args.submission:
        from lvas.engine.submission import is_submission, write_submission

        _replaceable(args.submission, is_submission, args.force, "--submission")

        done = write_submission(model, batches, args.submission, protocol, device, progress=not args.quiet)
        if getattr(ds, "submission_layout", "") == "davis17":
            print(f"{args.submission}: {done['masks']} label maps (anno_<k>/<video>/<frame>.png: each annotator's "
                  f"objects merged) of {done['expressions']} expressions in {done['videos']} videos ({ds.split} split)")
        else:
            print(f"{args.submission}: {done['masks']} masks of {done['expressions']} expressions in "
                  f"{done['videos']} videos ({ds.split} split, binarised as protocol {protocol})")
        return 0
    require_masks(ds, "--split")
    if args.json:
        _replaceable(args.json, _is_metrics_json, args.force, "--json")
    res = evaluate(model, batches, protocol, device, progress=not args.quiet)
    _print_metrics(cfg, args.split or cfg.data.test_split, protocol, res)
    if args.json:
        from lvas.liveness import write_atomic

        write_atomic(args.json, json.dumps({"protocol": protocol, "dataset": cfg.data.dataset.name,
                                            **res["metrics"]}, indent=1))
    return 0


def _replaceable(path, is_ours, force: bool, option: str) -> None:
    from lvas.liveness import check_replaceable

    try:
        check_replaceable(path, is_ours, force, option)
    except FileExistsError as e:
        raise ConfigError(str(e)) from None


def _is_metrics_json(path: Path) -> bool:
    """Whether ``path`` is a metrics file ``lvas eval --json`` wrote (a small JSON object naming its
    protocol and dataset)."""
    if path.stat().st_size > 1 << 20:
        return False
    data = json.loads(path.read_text())
    return isinstance(data, dict) and {"protocol", "dataset", "n"} <= set(data)


def _print_metrics(cfg, split: str, protocol: str, res: dict) -> None:
    m = res["metrics"]
    print(f"{cfg.data.dataset.name} {split} ({m['n']} samples, protocol {protocol}"
          + (f", {res['skipped']} skipped" if res["skipped"] else "") + ")")
    names = catalogue.PAPER_COLUMNS
    print("  ".join(f"{k:>6}" for k in ["", *names]))
    for g in [""] + sorted({k.split("/")[0] for k in m if k.endswith("/n")}):  # the query kinds
        pre = f"{g}/" if g else ""
        print("  ".join([f"{(g or 'all'):>6}"] + [f"{m[pre + k]:6.1f}" for k in names]) + f"  (n={m[pre + 'n']})")
    if "JF" in m and "anno_0/JF" in m:  # Ref-DAVIS17
        print(f"J {m['J']:.2f}  F {m['F']:.2f}  J&F {m['JF']:.2f}  (DAVIS-2017 unsupervised evaluation of each "
              f"annotator's merged label maps, {m['objects']} objects, averaged over the annotators: "
              + ", ".join(f"anno_{a} {m[f'anno_{a}/JF']:.2f}" for a in range(4) if f"anno_{a}/JF" in m) + ")")
    elif "JF" in m:
        print(f"J {m['J']:.2f}  F {m['F']:.2f}  J&F {m['JF']:.2f}  ({m['expressions']} expressions; DAVIS region J "
              f"and boundary F, mean over each expression's frames, then over expressions)")


def cmd_predict(args: argparse.Namespace) -> int:
    from lvas.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from lvas.engine.predict import PredictOptions, predict
    from lvas.engine.setup import resolve_device

    if not args.query.strip():
        raise ConfigError("--query: empty; expected a sentence naming the actor, e.g. 'the man jumping'")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create it ({e.strerror})") from None
    _import(args)
    with checkpoint_path(args.checkpoint, args.tracking_uri) as path:
        cfg, model, vocab = model_from_checkpoint(load_checkpoint(path), path)
    model.to(resolve_device(cfg.train.device))
    opts = PredictOptions(mp4=args.mp4, max_pixels=args.max_pixels, progress=not args.quiet)
    res = predict(model, vocab, cfg, args.video, args.query, out, opts)
    print(f"wrote {res['masks']} masks and {res['gif']}" + (f" and {res['mp4']}" if "mp4" in res else ""))
    return 0
