"""The ``lvas`` command: one entry point, one sub-command per job (the commands live in
:mod:`lvas.cli.tools`, :mod:`lvas.cli.run` and :mod:`lvas.cli.sweeps`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from lvas.cli.common import Parser, at_least, device_name, positive_float, quiet_libraries, version_text
from lvas.cli.run import cmd_eval, cmd_predict, cmd_train
from lvas.cli.sweeps import cmd_compare, cmd_report, cmd_sweep
from lvas.cli.tools import cmd_bench, cmd_config, cmd_data, cmd_flops, cmd_list
from lvas.config import ConfigError
from lvas.errors import DataError
from lvas.registry import RegistryError


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
    _tool_commands(sub)
    _run_commands(sub)
    _sweep_commands(sub)
    _data_commands(sub, _add, quiet)
    return p


def _tool_commands(sub) -> None:
    s = sub.add_parser("list", help="every component family and its registered components")
    s.add_argument("family", nargs="?", help="only this family (e.g. spatial, protocol, dataset)")
    s.add_argument("--import", dest="imports", action="append", metavar="MODULE_OR_FILE",
                   help="also import this module or .py file (your own components), as a YAML's imports: does")
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
    s = sub.add_parser("bench", help="time and memory benchmarks (figures for notes, not tests)")
    s.add_argument("what", choices=["model", "train", "data"],
                   help="model: forward and forward+backward of one batch; train: one optimiser step and an "
                        "evaluation at the config's own size on synthetic frames; data: clips/s of the training set")
    s.add_argument("experiment", help="experiment YAML")
    s.add_argument("overrides", nargs="*", help="key.path=value overrides")
    s.add_argument("--frames", type=at_least(1), default=None, help="clip length (default: data.frames)")
    s.add_argument("--size", type=at_least(32), default=None, help="frame size (default: data.size)")
    s.add_argument("--batch", type=at_least(1), default=None,
                   help="clips per batch (model: default 1; train: default 2, the global batch of the one step)")
    s.add_argument("--repeats", type=at_least(1), default=3, help="model: timed repetitions after one warm-up (the fastest is reported)")
    s.add_argument("--device", type=device_name, default=None, help="cpu or cuda (default: cuda when present)")
    s.add_argument("--samples", type=at_least(1), default=200, help="data: clips to read")
    s.add_argument("--workers", type=at_least(0), default=0, help="data: DataLoader workers (0 = in process)")
    s.set_defaults(func=cmd_bench)


def _run_commands(sub) -> None:
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
    s.add_argument("--dataset", default=None, help="registered dataset (lvas list dataset): a2d, jhmdb, ytvos, mevis, davis, synth")
    s.add_argument("--root", default=None, help="dataset folder (default: the one trained on)")
    s.add_argument("--split", default=None, help="split to evaluate (default: the config's data.test_split)")
    s.add_argument("--protocol", default=None,
                   help=f"scoring protocol: {', '.join(_protocols())} (lvas list protocol says what each does)")
    s.add_argument("--submission", default=None, metavar="OUT.zip",
                   help="Ref-YouTube-VOS: write the split's masks in the challenge layout "
                        "(Annotations/<video>/<expression>/<frame>.png) to this zip instead of scoring")
    s.add_argument("--config", default=None,
                   help="experiment YAML for a checkpoint that holds no lvas config, e.g. the released CSTM "
                        "checkpoint with experiments/cstm_released.yaml")
    s.add_argument("--tracking-uri", default=None, help="MLflow tracking URI to find a RUN_ID in (default sqlite:///mlflow.db)")
    s.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    s.add_argument("--force", action="store_true",
                   help="replace an existing --submission / --json file that lvas did not write (or a link)")
    s.add_argument("--import", dest="imports", action="append", metavar="MODULE_OR_FILE",
                   help="import your own components' module or .py file (a checkpoint never imports code)")
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
    s.add_argument("--import", dest="imports", action="append", metavar="MODULE_OR_FILE",
                   help="import your own components' module or .py file (a checkpoint never imports code)")
    s.set_defaults(func=cmd_predict)


def _sweep_commands(sub) -> None:
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
    s.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: --workers processes here; slurm: a SLURM job array of --workers tasks (submitit), "
                        "each running trials from the shared study")
    s.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="a submitit/SLURM parameter for --launcher slurm (slurm_partition=gpu, cpus_per_task=8, "
                        "timeout_min=2880, gpus_per_node=0 ...); repeat for several")
    s.add_argument("--wait", action="store_true", help="--launcher slurm: follow the array until it ends")
    s.add_argument("--status", action="store_true", help="print the sweep's progress (and its SLURM array's) and stop")
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
    s.add_argument("--columns", default=None, metavar="COL,COL",
                   help="the .tex's columns (default: the paper's: P@0.5-0.9, AP, oIoU, mIoU, or J, F, JF; 'all': "
                        "every column of the .md); the .md and .csv keep every column")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("compare", help="two runs of the same sweep (two machines, stores or commits): each row "
                                       "side by side, Δ between the runs, and whether every verdict is the same")
    s.add_argument("a", help="report folder (or a .verdicts.json) of the first run, e.g. reports/quickstart")
    s.add_argument("b", help="report folder (or a .verdicts.json) of the second run")
    s.add_argument("--metric", default=None, help="the metric shown per row (default: the sweep's)")
    s.add_argument("--out", default=None, help="also write the comparison to this Markdown file")
    s.set_defaults(func=cmd_compare)


def _data_commands(sub, _add, quiet) -> None:
    s = _add("data", help="make, prepare and check datasets")
    dsub = s.add_subparsers(dest="data_command", required=True, parser_class=Parser, metavar="DATA_COMMAND")
    _dadd = dsub.add_parser
    dsub.add_parser = lambda name, **kw: _dadd(name, parents=[quiet], **kw)
    d = dsub.add_parser("synth", help="write the synthetic set in the A2D Sentences layout (or, --layout mevis, "
                                      "multi-actor motion clips in the MeViS layout)")
    d.add_argument("--out", required=True, help="output folder")
    d.add_argument("--videos", type=at_least(1, 100_000), default=400, help="clips to draw (every fifth is a test clip)")
    d.add_argument("--frames", type=at_least(1, 1000), default=8, help="frames per clip")
    d.add_argument("--size", type=at_least(32, 4096), default=64, help="frame side in pixels")
    d.add_argument("--seed", type=at_least(0, 2**32 - 1), default=0, help="clip i depends only on (seed, i)")
    d.add_argument("--annotate", choices=["target", "all"], default="target",
                   help="masks of each clip's target frame only (default), or of every frame")
    d.add_argument("--layout", choices=["a2d", "mevis"], default="a2d",
                   help="a2d: the quickstart's appearance / motion set; mevis: multi-actor motion expressions "
                        "('the two moving left', 'the one that leaves the view'), every frame annotated")
    d = dsub.add_parser("prepare", help="a2d: extract frames from the .mp4 videos (resumable); "
                        "jhmdb: fix the 3 evaluated frames per video")
    d.add_argument("dataset", choices=["a2d", "jhmdb"], help="which dataset ROOT holds")
    d.add_argument("root", help="dataset folder")
    d = dsub.add_parser("check", help="validate a dataset folder, print counts and every problem")
    d.add_argument("root", help="dataset folder")
    d.add_argument("--dataset", choices=["a2d", "jhmdb", "ytvos", "mevis", "davis", "synth"], default="a2d", help="its layout")
    d.add_argument("--frames", type=at_least(1), default=8, help="clip length (to flag videos shorter than a clip)")
    s.set_defaults(func=cmd_data)




def _protocols() -> list[str]:
    """The shipped protocols, from the registry index (no import of the components to build --help)."""
    import json

    from lvas.registry import INDEX

    try:
        return sorted(json.loads(INDEX.read_text())["families"]["protocol"])
    except (OSError, ValueError, KeyError):
        return ["paper", "lbdt", "strict", "coco", "coco_top1"]


def main(argv: Sequence[str] | None = None) -> int:
    saved = sys.stdout, sys.stderr
    _guard_output()
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = saved


def _main(argv: Sequence[str] | None) -> int:
    from lvas.signals import Terminated, terminate_like_interrupt

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides written after an option (`lvas sweep S.yaml --workers 2 k=v`)
        if hasattr(args, "overrides") and all("=" in t and not t.startswith("-") for t in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "quiet", False):
        quiet_libraries()
    terminate_like_interrupt()
    try:
        return args.func(args)
    except (ConfigError, DataError, RegistryError, ValueError) as e:
        from lvas.config import redact

        print(f"lvas {args.command}: error: {redact(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `lvas ... | head`: the reader has gone; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a file or folder lvas cannot read or write: the path and the cause
        return _os_error(args.command, e)
    except Terminated:
        print(f"lvas {args.command}: terminated (SIGTERM); nothing recorded is lost (rerun to resume)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"lvas {args.command}: interrupted; nothing recorded is lost (rerun to resume)", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"lvas {args.command}: error: out of memory (a frame, clip or batch larger than this machine holds: "
              f"lower data.size, data.frames or train.batch_size)", file=sys.stderr)
        return 2


def _guard_output() -> None:
    """No password on the screen: stdout and stderr mask ``user:password@`` in every line (lvas's and
    its libraries'), and MLflow does not print its own run links (lvas prints the UI link it means;
    MLflow's would carry the tracking URI's credentials). Inherited by every process lvas starts."""
    from lvas.errors import RedactedStream

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactedStream):
            setattr(sys, name, RedactedStream(stream))


def _os_error(command: str, e: OSError) -> int:
    import errno

    where = f"{e.filename}: " if e.filename else ""
    hint = {errno.ENOSPC: " (the disk is full; free space and rerun to resume)",
            errno.EROFS: " (the file system is read-only)",
            errno.EACCES: " (permission denied)"}.get(e.errno, "")
    print(f"lvas {command}: error: {where}{e.strerror or e}{hint if e.strerror and hint[2:] not in e.strerror.lower() else ''}",
          file=sys.stderr)
    return 2

