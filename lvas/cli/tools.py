"""``lvas list``, ``lvas config``, ``lvas flops``, ``lvas data``, ``lvas bench``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lvas.config import ConfigError


def cmd_list(args: argparse.Namespace) -> int:
    """Every family and its components, with where each came from (lvas or a plugin file / module).
    Torch-free: lvas's entries come from the registry index."""
    from lvas.errors import did_you_mean
    from lvas.registry import RegistryError, all_families, import_plugins

    try:
        import_plugins(list(args.imports or []), "--import")
    except RegistryError as e:
        raise ConfigError(str(e)) from None
    families = all_families()
    if args.family:
        chosen = {k: r for k, r in families.items() if args.family in (k, r.family)}
        if not chosen:
            raise ConfigError(f"family {args.family!r} is not known; families: {', '.join(families)}"
                              + did_you_mean(args.family, families))
        families = chosen
    width = max((len(e.name) for reg in families.values() for e in reg), default=8)
    for key, reg in families.items():
        print(f"{reg.family} ({key}): {reg.description}")
        for entry in reg:
            settings = ", ".join(f"{p.name}={p.default!r}" if p.default != "<required>" else p.name
                                 for p in entry.params)
            origin = "" if entry.origin == "lvas" else f"  [from {_shown_path(entry.origin)}]"
            print(f"  {entry.name:<{width}}  {entry.description}{f' (settings: {settings})' if settings else ''}{origin}")
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
        from lvas.data.synthetic import generate, generate_mevis

        t = time.perf_counter()
        if args.layout == "mevis":
            counts = generate_mevis(args.out, args.videos, args.frames, args.size, args.seed, progress=not args.quiet)
            print(f"wrote {args.videos} clips to {args.out} (MeViS layout) in {time.perf_counter() - t:.1f} s: "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()))
            return 0
        counts = generate(args.out, args.videos, args.frames, args.size, args.seed, progress=not args.quiet,
                          annotate=args.annotate)
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
    from lvas.data.check import check_a2d, check_davis, check_jhmdb, check_mevis, check_ytvos

    if args.dataset == "jhmdb":
        rep = check_jhmdb(args.root, args.frames)
    elif args.dataset == "ytvos":
        rep = check_ytvos(args.root, args.frames)
    elif args.dataset == "mevis":
        rep = check_mevis(args.root, args.frames)
    elif args.dataset == "davis":
        rep = check_davis(args.root, args.frames)
    else:
        rep = check_a2d(args.root, args.frames, dataset=args.dataset)
    print(rep.format())
    return 0 if rep.ok else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from lvas.config import load_config

    if args.what == "train":
        from lvas.bench import bench_train

        result = bench_train(args.experiment, args.overrides, args.batch or 2, args.device)
        print(json.dumps(result, indent=1))
        return 0
    cfg = load_config(args.experiment, args.overrides)
    if args.what == "model":
        from lvas.bench import bench_model

        result = bench_model(cfg, args.frames, args.size, args.batch or 1, args.repeats, args.device)
    else:
        from lvas.bench import bench_data

        result = bench_data(cfg, args.samples, args.workers)
    print(json.dumps(result, indent=2))
    return 0


def _shown_path(origin: str) -> str:
    """A plugin file under the working directory as a relative path; anything else as it is."""
    try:
        return str(Path(origin).relative_to(Path.cwd()))
    except ValueError:
        return origin
