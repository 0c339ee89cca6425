"""The ``lvas`` command: one entry point, one sub-command per job."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from lvas.config import ConfigError


def cmd_list(args: argparse.Namespace) -> int:
    from lvas.registry import all_families

    for key, reg in all_families().items():
        print(f"{reg.family} ({key}): {reg.description}")
        for entry in reg:
            print(f"  {entry.name:<10} {entry.description}")
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


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from lvas.config import load_config

    cfg = load_config(args.experiment, args.overrides)
    if args.what == "model":
        from lvas.bench import bench_model

        result = bench_model(cfg, args.frames, args.size, args.batch, args.repeats, args.device)
    else:  # pragma: no cover - argparse restricts the choices
        raise ValueError(args.what)
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lvas", description="Ablations of CSTM (language-queried video actor segmentation)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="every component family and its registered components")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("flops", help="GMACs, GFLOPs and parameters of an experiment's model, or Table 4")
    s.add_argument("experiment", nargs="?", help="experiment YAML")
    s.add_argument("overrides", nargs="*", help="key.path=value overrides")
    s.add_argument("--frames", type=int, default=None, help="clip length (default: data.frames)")
    s.add_argument("--size", type=int, default=None, help="frame size (default: data.size)")
    s.add_argument("--table", action="store_true", help="write reports/table4_gflops.{md,tex,csv}")
    s.add_argument("--out", default="reports", help="output folder for --table")
    s.add_argument("--experiments", default="experiments", help="experiment folder for --table")
    s.set_defaults(func=cmd_flops)

    s = sub.add_parser("bench", help="time and memory benchmarks (figures for notes, not tests)")
    s.add_argument("what", choices=["model"], help="model: forward and forward+backward of one batch")
    s.add_argument("experiment", help="experiment YAML")
    s.add_argument("overrides", nargs="*", help="key.path=value overrides")
    s.add_argument("--frames", type=int, default=None)
    s.add_argument("--size", type=int, default=None)
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    s.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"lvas {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
