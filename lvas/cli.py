"""The ``lvas`` command: one entry point, one sub-command per job."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from lvas.config import ConfigError
from lvas.errors import DataError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``lvas train: error: argument --x: ...; see lvas train --help``)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def at_least(lo: int):
    """argparse type: an integer >= ``lo``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"{value} is too small; expected an integer >= {lo}")
        return value
    parse.__name__ = f"integer >= {lo}"
    return parse


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not > 0")
    return value


def device_name(text: str) -> str:
    """argparse type: auto, cpu, mps, cuda or cuda:N (as ``train.device``)."""
    import re

    from lvas.config import DEVICE_NAMES

    if not re.fullmatch(DEVICE_NAMES, text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto, cpu, mps, cuda or cuda:N")
    return text


# keys an evaluation may change: where the data is and how fast it runs, never what was trained
EVAL_OVERRIDABLE = ("data.", "train.protocol", "train.batch_size", "train.device", "train.threads",
                    "train.channels_last", "train.amp", "tracking.")


def cmd_list(args: argparse.Namespace) -> int:
    from lvas.registry import all_families

    families = all_families()
    if args.family:
        chosen = {k: r for k, r in families.items() if args.family in (k, r.family)}
        if not chosen:
            from lvas.errors import did_you_mean

            raise ConfigError(f"family {args.family!r} is not known; families: {', '.join(families)}"
                              + did_you_mean(args.family, families))
        families = chosen
    width = max(len(e.name) for reg in families.values() for e in reg)
    for key, reg in families.items():
        print(f"{reg.family} ({key}): {reg.description}")
        for entry in reg:
            print(f"  {entry.name:<{width}}  {entry.description}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """The resolved config as YAML (what ``lvas train`` would run and store), credentials redacted."""
    from lvas.config import flatten_dict, load_config, redact, to_dict, to_yaml

    cfg = load_config(args.experiment, args.overrides)
    if args.flat:
        for k, v in flatten_dict(to_dict(cfg)).items():
            print(redact(f"{k}={v}"))
    else:
        print(redact(to_yaml(cfg)), end="")
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    if args.table:
        from lvas.report.table4 import write_table4

        paths = write_table4(args.out, args.experiments, args.frames or 8, args.size or 320)
        print(paths[0].read_text())
        print("wrote " + ", ".join(map(str, paths)))
        return 0
    if not args.experiment:
        raise ConfigError("lvas flops: give an EXPERIMENT.yaml or --table")
    from lvas.config import load_config
    from lvas.flops import format_report, measure_config

    cfg = load_config(args.experiment, args.overrides)
    print(format_report(cfg.name, measure_config(cfg, args.frames, args.size)))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        import time

        from lvas.data.synthetic import generate

        t = time.perf_counter()
        counts = generate(args.out, args.videos, args.frames, args.size, args.seed)
        print(f"wrote {args.videos} clips to {args.out} in {time.perf_counter() - t:.1f} s: "
              + ", ".join(f"{k} {v}" for k, v in counts.items()) + " samples")
        return 0
    if args.data_command == "prepare":
        if args.dataset == "a2d":
            from lvas.data.a2d import prepare_frames

            res = prepare_frames(args.root, progress=not args.quiet)
            print(f"{res['extracted']} video(s) extracted, {res['skipped']} already done")
            for name in res["refused"]:
                print(f"lvas data prepare: skipped {name!r}: not a plain video id (nothing created or removed)",
                      file=sys.stderr)
        else:
            from lvas.data.jhmdb import load_samples

            df, path = load_samples(args.root)
            print(f"{len(df)} J-HMDB samples fixed in {path}")
        return 0
    from lvas.data.check import check_a2d, check_jhmdb, check_ytvos

    if args.dataset == "jhmdb":
        rep = check_jhmdb(args.root, args.frames)
    elif args.dataset == "ytvos":
        rep = check_ytvos(args.root, args.frames)
    else:
        rep = check_a2d(args.root, args.frames, dataset=args.dataset)
    print(rep.format())
    return 0 if rep.ok else 1


def cmd_train(args: argparse.Namespace) -> int:
    from lvas.config import load_config
    from lvas.engine.trainer import TrainingDiverged, run_dir_for, train_experiment

    cfg = load_config(args.experiment, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else run_dir_for(cfg)
    if args.resume and not (run_dir / "last.pt").is_file():
        raise ConfigError(f"--resume: {run_dir} holds no last.pt to continue from (leave out --resume to start)")
    import json

    try:
        tags = json.loads(args.tags or "{}")
    except ValueError as e:
        raise ConfigError(f"--tags: not valid JSON ({e})") from None
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise ConfigError('--tags: expected a JSON object of strings, e.g. \'{"team": "vision"}\'')

    try:
        from lvas.tracking import file_description

        about = file_description(args.experiment)
        result, run_id = train_experiment(cfg, run_dir, resume=args.resume, tracking_uri=args.tracking_uri,
                                          experiment=args.experiment_name, parent_run_id=args.parent_run_id,
                                          run_name=args.run_name, extra_tags=tags, progress=not args.quiet,
                                          description=about + (f"\n\nOverrides: `{' '.join(args.overrides)}`"
                                                               if args.overrides else ""),
                                          experiment_description=about)
    except TrainingDiverged as e:
        print(f"lvas train: {e}", file=sys.stderr)
        return 1
    test = result.test
    if not test:  # a non-zero rank under torchrun
        return 0
    print(f"selected epoch {test.get('epoch')} ({cfg.train.select}); test {cfg.train.protocol}: "
          + "  ".join(f"{k} {test[k]:.1f}" for k in ("AP", "oIoU", "mIoU")))
    print(f"checkpoint: {result.checkpoint}")
    if run_id:
        print(f"MLflow run: {run_id}")
    return 0


def _checkpoint_path(ref: str, tracking_uri: str | None) -> Path:
    p = Path(ref)
    if p.is_file() or p.suffix == ".pt" or "/" in ref:
        return p
    from lvas.tracking import download_artifact, resolve_uri

    try:
        return download_artifact(ref, "checkpoints/model.pt", resolve_uri(tracking_uri))
    except Exception as e:  # noqa: BLE001 - mlflow raises several types for an unknown run
        raise ConfigError(f"{ref}: neither a checkpoint file nor an MLflow run with checkpoints/model.pt ({e})") from None


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from torch.utils.data import DataLoader

    from lvas.config import apply_overrides, from_dict, to_dict
    from lvas.data import build_dataset, collate
    from lvas.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from lvas.engine.evaluate import evaluate
    from lvas.engine.trainer import resolve_device

    path = _checkpoint_path(args.checkpoint, args.tracking_uri)
    if args.config:  # a checkpoint without an lvas config: the released CSTM layout
        from lvas.config import load_raw
        from lvas.engine.checkpoint import model_from_released

        data = load_raw(args.config)
        cfg = from_dict(apply_overrides(data, args.overrides))
        vocab = build_dataset(cfg, cfg.data.train_split).vocab
        if cfg.model.text.embedding == "glove_frozen":
            # the release looks every word up in GloVe, with no vocabulary: a fixed table covers the
            # evaluated queries' words too (nothing is learned or chosen from them)
            from lvas.data.vocab import with_words_of

            vocab = with_words_of(vocab, build_dataset(cfg, args.split or cfg.data.test_split, vocab=vocab).queries())
        model = model_from_released(path, cfg, vocab)
    else:
        cfg, model, vocab = model_from_checkpoint(load_checkpoint(path), path)
        for text in args.overrides:
            key = text.split("=", 1)[0].strip()
            if "=" in text and key and not key.startswith(EVAL_OVERRIDABLE):
                from lvas.config import flatten_dict

                now = flatten_dict(to_dict(cfg)).get(key, "<none>")
                allowed = ", ".join(k + "*" if k.endswith(".") else k for k in EVAL_OVERRIDABLE)
                raise ConfigError(f"{key}: cannot change when evaluating a trained checkpoint (it was trained with "
                                  f"{key}={now}); only {allowed} can")
    data = to_dict(cfg)
    if args.dataset:
        data["data"]["dataset"] = args.dataset
    if args.root:
        data["data"]["root"] = args.root
    cfg = from_dict(apply_overrides(data, args.overrides))
    device = resolve_device(cfg.train.device)
    from lvas.engine import resources

    workers = resources.apply(cfg, device).workers
    model.to(device)
    if cfg.train.channels_last:
        from lvas.models.base import to_channels_last

        to_channels_last(model)
    ds = build_dataset(cfg, args.split or cfg.data.test_split, vocab=vocab)
    loader = DataLoader(ds, batch_size=cfg.train.batch_size, collate_fn=collate, num_workers=workers)
    protocol = args.protocol or cfg.train.protocol
    from lvas.registry import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol: {PROTOCOLS.unknown_message(protocol)}")
    if args.submission:
        from lvas.engine.submission import write_submission

        if cfg.data.dataset != "ytvos":
            raise ConfigError(f"--submission: writes Ref-YouTube-VOS masks; this config's data.dataset is "
                              f"{cfg.data.dataset!r} (give --dataset ytvos --root ROOT)")
        done = write_submission(model, loader, args.submission, protocol, device, progress=not args.quiet)
        print(f"{args.submission}: {done['masks']} masks of {done['expressions']} expressions in "
              f"{done['videos']} videos ({ds.split} split, binarised as protocol {protocol})")
        return 0
    from lvas.data import require_masks

    require_masks(ds, "--split")
    res = evaluate(model, loader, protocol, device, progress=not args.quiet)
    m = res["metrics"]
    print(f"{cfg.data.dataset} {args.split or cfg.data.test_split} ({m['n']} samples, protocol {protocol}"
          + (f", {res['skipped']} skipped" if res["skipped"] else "") + ")")
    names = ["P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9", "AP", "oIoU", "mIoU"]
    print("  ".join(f"{k:>6}" for k in ["", *names]))
    groups = [""] + sorted({k.split("/")[0] for k in m if "/" in k})
    for g in groups:
        pre = f"{g}/" if g else ""
        print("  ".join([f"{(g or 'all'):>6}"] + [f"{m[pre + k]:6.1f}" for k in names]) + f"  (n={m[pre + 'n']})")
    if "JF" in m:
        print(f"J {m['J']:.2f}  F {m['F']:.2f}  J&F {m['JF']:.2f}  ({m['expressions']} expressions; DAVIS region J "
              f"and boundary F, mean over each expression's frames, then over expressions)")
    if args.json:
        Path(args.json).write_text(json.dumps({"protocol": protocol, "dataset": cfg.data.dataset, **m}, indent=1))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from lvas.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from lvas.engine.predict import predict
    from lvas.engine.trainer import resolve_device

    if not args.query.strip():
        raise ConfigError("--query: empty; expected a sentence naming the actor, e.g. 'the man jumping'")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create it ({e.strerror})") from None
    path = _checkpoint_path(args.checkpoint, args.tracking_uri)
    cfg, model, vocab = model_from_checkpoint(load_checkpoint(path), path)
    model.to(resolve_device(cfg.train.device))
    res = predict(model, vocab, cfg, args.video, args.query, out, mp4=args.mp4, max_pixels=args.max_pixels,
                  progress=not args.quiet)
    print(f"wrote {res['masks']} masks and {res['gif']}" + (f" and {res['mp4']}" if "mp4" in res else ""))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import json

    from lvas.sweep.runner import OVERRIDES_ENV, STORAGE_ENV, SweepOptions, dry_run_table, run_sweep, run_worker
    from lvas.sweep.spec import load_sweep

    overrides = list(args.overrides)
    if args.worker:  # the coordinator's command-line overrides, passed in the environment
        overrides = json.loads(os.environ.get(OVERRIDES_ENV, "[]"))
    spec = load_sweep(args.sweep, overrides)
    if args.dry_run:
        table = dry_run_table(spec)
        print(f"{spec.name}: method {spec.method}, metric {spec.metric} ({spec.goal}), base {spec.base}")
        print(table.to_markdown(index=False))
        if spec.method == "grid":
            print(f"{len(table)} trial(s)" + (f" (adaptive: up to {len(spec.points()) * spec.seeds.max})"
                                              if spec.seeds.adaptive else ""))
        return 0
    opts = SweepOptions(storage=args.storage or os.environ.get(STORAGE_ENV) or None, tracking_uri=args.tracking_uri, out=args.out,
                        retry_failed=args.retry_failed, stale_after=args.stale_after, progress=not args.quiet,
                        gpus=[g for g in args.gpus.split(",") if g] if args.gpus else None,
                        gpus_per_trial=args.gpus_per_trial, rerun_stale=args.rerun_stale)
    if args.worker:
        return run_worker(spec, opts)
    return run_sweep(spec, opts, workers=args.workers)


def cmd_report(args: argparse.Namespace) -> int:
    from lvas.config import redact
    from lvas.report.generate import report_sweep, write_index
    from lvas.sweep.spec import load_sweep
    from lvas.tracking import resolve_uri

    paths = list(args.sweeps)
    if args.all and not Path(args.sweeps_dir).is_dir():
        raise ConfigError(f"--sweeps-dir {args.sweeps_dir}: folder not found")
    if args.all:
        paths += sorted(str(p) for p in Path(args.sweeps_dir).glob("*.yaml"))
    if not paths and not args.all:
        raise ConfigError("lvas report: name sweep YAMLs or give --all")
    uri = resolve_uri(args.tracking_uri)
    empty = []
    for p in paths:
        spec = load_sweep(p)
        res = report_sweep(spec, uri, args.out, figures=not args.no_figures, samples=args.samples, force=args.force)
        print(f"{spec.name}: " + ", ".join(str(t) for t in res["tables"][:1])
              + f" (+ .tex .csv), {len(res['figures'])} figure(s)"
              + (f"; missing rows: {', '.join(res['missing'])}" if res["missing"] else ""))
        if res["rows"] and len(res["missing"]) == res["rows"]:
            empty.append(spec.name)
    if args.all:
        from lvas.report.table4 import write_table4

        write_table4(args.out, args.experiments)
    print(f"index: {write_index(args.out)}")
    if empty and (not args.all or len(empty) == len(paths)):
        # a table with no row is no result: say so in the exit status (scripts, CI); with --all,
        # sweeps not run yet are expected, so only an --all where nothing at all was found fails
        print(f"lvas report: error: every row is missing in {', '.join(empty)} (not run yet, still running, failed "
              f"or stale; is --tracking-uri {redact(uri)} the store the sweep used?)", file=sys.stderr)
        return 1
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from lvas.config import load_config

    cfg = load_config(args.experiment, args.overrides)
    if args.what == "model":
        from lvas.bench import bench_model

        result = bench_model(cfg, args.frames, args.size, args.batch, args.repeats, args.device)
    else:
        from lvas.bench import bench_data

        result = bench_data(cfg, args.samples, args.workers)
    print(json.dumps(result, indent=2))
    return 0


def version_text() -> str:
    """``lvas X (torch Y, torchvision Z, mlflow W, optuna V)``, read from the installed metadata (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    from lvas import __version__

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "not installed"

    return f"lvas {__version__} (" + ", ".join(f"{p} {v(p)}" for p in ("torch", "torchvision", "mlflow", "optuna")) + ")"


def quiet_libraries() -> None:
    """--quiet: MLflow's, Alembic's and Optuna's INFO lines off (warnings and errors stay)."""
    import logging

    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="lvas", description="Ablations of language-queried video actor segmentation: CSTM, ACGA and "
                                        "LBDT from one registry, sweeps on MLflow + Optuna, the papers' tables")
    p.add_argument("--version", action="version", version=version_text(), help="print the versions and exit")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", "-q", action="store_true",
                       help="no progress bars and no INFO lines from MLflow / Optuna; results and errors still print")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    _add = sub.add_parser

    def add_parser(name: str, **kw):
        return _add(name, parents=[quiet], **kw)

    sub.add_parser = add_parser  # every sub-command takes --quiet

    s = sub.add_parser("list", help="every component family and its registered components")
    s.add_argument("family", nargs="?", help="only this family (e.g. spatial, protocol, dataset)")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("config", help="print an experiment's resolved config (base files and overrides applied)")
    s.add_argument("experiment", help="experiment YAML")
    s.add_argument("overrides", nargs="*", help="key.path=value overrides")
    s.add_argument("--flat", action="store_true", help="one key.path=value line per setting (greppable)")
    s.set_defaults(func=cmd_config)

    s = sub.add_parser("flops", help="GMACs, GFLOPs and parameters of an experiment's model, or Table 4")
    s.add_argument("experiment", nargs="?", help="experiment YAML")
    s.add_argument("overrides", nargs="*", help="key.path=value overrides")
    s.add_argument("--frames", type=at_least(1), default=None, help="clip length (default: data.frames)")
    s.add_argument("--size", type=at_least(32), default=None, help="frame size (default: data.size)")
    s.add_argument("--table", action="store_true", help="write reports/table4_gflops.{md,tex,csv}")
    s.add_argument("--out", default="reports", help="output folder for --table")
    s.add_argument("--experiments", default="experiments", help="experiment folder for --table")
    s.set_defaults(func=cmd_flops)

    s = sub.add_parser("train", help="train and evaluate an experiment, tracked in MLflow")
    s.add_argument("experiment", help="experiment YAML")
    s.add_argument("overrides", nargs="*", help="key.path=value overrides")
    s.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    s.add_argument("--run-dir", default=None, help="default: <train.out_dir>/<name>-<config hash>")
    s.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlflow.db)")
    s.add_argument("--experiment-name", default=None, help="MLflow experiment (default: the config's name)")
    s.add_argument("--parent-run-id", default=None, help="nest the run under this MLflow run (sweeps)")
    s.add_argument("--run-name", default=None, help="MLflow run name (default: the config's name)")
    s.add_argument("--tags", default=None, help="extra MLflow tags as a JSON object")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="evaluate a checkpoint (or an MLflow run's selected checkpoint)")
    s.add_argument("checkpoint", help="CHECKPOINT.pt or an MLflow RUN_ID")
    s.add_argument("overrides", nargs="*", help="key.path=value overrides of the stored config (e.g. data.root=...)")
    s.add_argument("--dataset", default=None, help="registered dataset (lvas list dataset): a2d, jhmdb, ytvos, synth")
    s.add_argument("--root", default=None, help="dataset folder (default: the one trained on)")
    s.add_argument("--split", default=None, help="split to evaluate (default: the config's data.test_split)")
    s.add_argument("--protocol", default=None, help="scoring protocol (lvas list protocol): paper, lbdt, strict")
    s.add_argument("--submission", default=None, metavar="OUT.zip",
                   help="Ref-YouTube-VOS: write the split's masks in the challenge layout "
                        "(Annotations/<video>/<expression>/<frame>.png) to this zip instead of scoring")
    s.add_argument("--config", default=None,
                   help="experiment YAML for a checkpoint that holds no lvas config, e.g. the released CSTM "
                        "checkpoint with experiments/cstm_released.yaml")
    s.add_argument("--tracking-uri", default=None, help="MLflow tracking URI to find a RUN_ID in (default sqlite:///mlflow.db)")
    s.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("predict", help="masks for every frame of your own video and a query")
    s.add_argument("checkpoint", help="CHECKPOINT.pt or an MLflow RUN_ID")
    s.add_argument("--video", required=True, help="a video file or a folder of frames")
    s.add_argument("--query", required=True, help="the sentence naming the actor, e.g. 'the man jumping'")
    s.add_argument("--out", required=True, help="output folder (mask PNGs, overlay.gif)")
    s.add_argument("--mp4", action="store_true", help="also write overlay.mp4")
    s.add_argument("--max-pixels", type=at_least(1), default=40_000_000,
                   help="refuse frames larger than this many pixels (default 40 million, e.g. 8K video)")
    s.add_argument("--tracking-uri", default=None, help="MLflow tracking URI to find a RUN_ID in (default sqlite:///mlflow.db)")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("sweep", help="run a sweep YAML: trials in Optuna, nested runs in MLflow; rerun to resume")
    s.add_argument("sweep", help="sweep YAML")
    s.add_argument("overrides", nargs="*", help="key.path=value applied to every trial (on top of the file's "
                   "overrides:), e.g. train.epochs=2 data.root=/data/a2d")
    s.add_argument("--workers", type=at_least(1), default=1, help="trial processes on this machine")
    s.add_argument("--gpus", default=None, help="comma-separated GPU ids; worker i gets gpus[i %% n]")
    s.add_argument("--gpus-per-trial", type=at_least(1), default=1,
                   help="run each trial with torchrun on this many processes (DDP; one GPU each, gloo on CPU)")
    s.add_argument("--storage", default=None,
                   help="Optuna storage URL (default: $LVAS_STORAGE, else a journal file under --out); put a URL "
                        "with a password in LVAS_STORAGE rather than here, where `ps` shows it")
    s.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlflow.db)")
    s.add_argument("--out", default="runs/sweeps", help="folder of trial checkpoints and the journal")
    s.add_argument("--retry-failed", action="store_true", help="run failed trials again")
    s.add_argument("--rerun-stale", action="store_true",
                   help="run again the trials whose resolved config the edited sweep file changed")
    s.add_argument("--stale-after", type=positive_float, default=600.0,
                   help="seconds without a heartbeat after which a trial running on another host counts as "
                        "interrupted (on this host: when its process is gone)")
    s.add_argument("--dry-run", action="store_true", help="print the trial table and stop")
    s.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("report", help="the paper's tables and figures from the sweeps' MLflow runs")
    s.add_argument("sweeps", nargs="*", help="sweep YAMLs")
    s.add_argument("--all", action="store_true", help="every sweep in --sweeps-dir, and Table 4")
    s.add_argument("--sweeps-dir", default="sweeps", help="folder of sweep YAMLs for --all")
    s.add_argument("--experiments", default="experiments", help="for Table 4 with --all")
    s.add_argument("--tracking-uri", default=None, help="MLflow tracking URI the runs are in (default sqlite:///mlflow.db)")
    s.add_argument("--out", default="reports", help="output folder of tables and figures")
    s.add_argument("--samples", type=at_least(0), default=4, help="samples in the qualitative figure")
    s.add_argument("--no-figures", action="store_true", help="tables only")
    s.add_argument("--force", action="store_true",
                   help="replace a table even when this store gives fewer finished rows than it holds")
    s.set_defaults(func=cmd_report)

    s = _add("data", help="make, prepare and check datasets")
    dsub = s.add_subparsers(dest="data_command", required=True, parser_class=Parser, metavar="DATA_COMMAND")
    _dadd = dsub.add_parser
    dsub.add_parser = lambda name, **kw: _dadd(name, parents=[quiet], **kw)
    d = dsub.add_parser("synth", help="write the synthetic set in the A2D Sentences layout")
    d.add_argument("--out", required=True, help="output folder")
    d.add_argument("--videos", type=at_least(1), default=400, help="clips to draw (every fifth is a test clip)")
    d.add_argument("--frames", type=at_least(1), default=8, help="frames per clip")
    d.add_argument("--size", type=at_least(32), default=64, help="frame side in pixels")
    d.add_argument("--seed", type=int, default=0, help="clip i depends only on (seed, i)")
    d = dsub.add_parser("prepare", help="a2d: extract frames from the .mp4 videos (resumable); "
                        "jhmdb: fix the 3 evaluated frames per video")
    d.add_argument("dataset", choices=["a2d", "jhmdb"], help="which dataset ROOT holds")
    d.add_argument("root", help="dataset folder")
    d = dsub.add_parser("check", help="validate a dataset folder, print counts and every problem")
    d.add_argument("root", help="dataset folder")
    d.add_argument("--dataset", choices=["a2d", "jhmdb", "ytvos", "synth"], default="a2d", help="its layout")
    d.add_argument("--frames", type=at_least(1), default=8, help="clip length (to flag videos shorter than a clip)")
    s.set_defaults(func=cmd_data)

    s = sub.add_parser("bench", help="time and memory benchmarks (figures for notes, not tests)")
    s.add_argument("what", choices=["model", "data"],
                   help="model: forward and forward+backward of one batch; data: clips/s of the training set")
    s.add_argument("experiment", help="experiment YAML")
    s.add_argument("overrides", nargs="*", help="key.path=value overrides")
    s.add_argument("--frames", type=at_least(1), default=None, help="clip length (default: data.frames)")
    s.add_argument("--size", type=at_least(32), default=None, help="frame size (default: data.size)")
    s.add_argument("--batch", type=at_least(1), default=1, help="model: clips per batch")
    s.add_argument("--repeats", type=at_least(1), default=3, help="model: timed repetitions after one warm-up (the fastest is reported)")
    s.add_argument("--device", type=device_name, default=None, help="cpu or cuda (default: cuda when present)")
    s.add_argument("--samples", type=at_least(1), default=200, help="data: clips to read")
    s.add_argument("--workers", type=at_least(0), default=0, help="data: DataLoader workers (0 = in process)")
    s.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides written after an option (`lvas sweep S.yaml --workers 2 k=v`)
        if hasattr(args, "overrides") and all("=" in t and not t.startswith("-") for t in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "quiet", False):
        quiet_libraries()
    try:
        return args.func(args)
    except (ConfigError, DataError, ValueError) as e:
        from lvas.config import redact

        print(f"lvas {args.command}: error: {redact(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `lvas ... | head`: the reader has gone; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a file or folder lvas cannot read or write
        where = f"{e.filename}: " if e.filename else ""
        print(f"lvas {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lvas {args.command}: interrupted; nothing recorded is lost (rerun to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
