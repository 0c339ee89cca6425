"""``lvas sweep`` and ``lvas report``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lvas.config import ConfigError, redact


def cmd_sweep(args: argparse.Namespace) -> int:
    from lvas.sweep.launch import OVERRIDES_ENV, run_sweep, run_worker
    from lvas.sweep.progress import dry_run_table
    from lvas.sweep.runner import SweepOptions
    from lvas.sweep.study import STORAGE_ENV
    from lvas.sweepspec import check_processes, load_sweep

    overrides = list(args.overrides)
    if args.worker:  # the coordinator's command-line overrides, passed in the environment
        overrides = json.loads(os.environ.get(OVERRIDES_ENV, "[]"))
    spec = load_sweep(args.sweep, overrides)
    check_processes(spec, args.gpus_per_trial)
    if args.dry_run:
        table = dry_run_table(spec)
        print(f"{spec.name}: method {spec.method}, metric {spec.metric} ({spec.goal}), base {spec.base}")
        print(table.to_markdown(index=False))
        if spec.method == "grid":
            print(f"{len(table)} trial(s)" + (f" (adaptive: up to {len(spec.points()) * spec.seeds.max})"
                                              if spec.seeds.adaptive else ""))
        return 0
    opts = SweepOptions(storage=args.storage or os.environ.get(STORAGE_ENV) or None, tracking_uri=args.tracking_uri,
                        out=args.out, retry_failed=args.retry_failed, stale_after=args.stale_after,
                        progress=not args.quiet, gpus=[g for g in args.gpus.split(",") if g] if args.gpus else None,
                        gpus_per_trial=args.gpus_per_trial, rerun_stale=args.rerun_stale)
    if args.worker:
        return run_worker(spec, opts)
    if args.status or args.launcher == "slurm":
        from lvas.sweep import slurm

        if args.status:
            code, uri, done = slurm.status(spec, opts)
        else:
            code, uri, done = slurm.submit(spec, opts, args.workers, slurm.parse_slurm_params(args.slurm),
                                           wait=args.wait)
        if done:  # nothing left to run: the parent run's summary (as a local sweep writes at its end)
            summarise(spec, uri)
        return code
    if args.slurm or args.wait:
        raise ConfigError("--slurm and --wait go with --launcher slurm")
    code, runner = run_sweep(spec, opts, workers=args.workers)
    summarise(spec, runner.tracking_uri)
    return code


def summarise(spec, tracking_uri: str) -> None:
    """The parent run's first screen: per-row means, the row table, the best row (if it is separated)."""
    from lvas.report.parent import summarise_to_parent

    from lvas.sweep.parent import ui_link

    try:
        done = summarise_to_parent(spec, tracking_uri)
        if done is not None:
            print(done["headline"].replace("**", ""))
        link = ui_link(spec, tracking_uri)
        if link:
            local = link.startswith("http://127.0.0.1:5000/")  # a local store: the UI `make ui` serves
            print(f"MLflow UI (runs grouped by row): {link}" + ("  (after `make ui`)" if local else ""))
    except Exception as e:  # noqa: BLE001 - the trials are recorded; a summary that fails must not hide that
        print(f"[{spec.name}] could not summarise into the parent run ({type(e).__name__}: {redact(str(e))[:300]}); "
              f"`lvas report` retries", file=sys.stderr)


def cmd_compare(args: argparse.Namespace) -> int:
    """Two runs of one sweep side by side; exit 1 when a verdict flips."""
    from lvas.liveness import check_replaceable, write_atomic
    from lvas.report.compare import compare_reports

    text, flips = compare_reports(args.a, args.b, args.metric)
    print(text, end="")
    if args.out:
        check_replaceable(args.out, lambda p: p.read_text().startswith("## ") and "verdicts the same" in p.read_text(),
                          False, "--out")
        write_atomic(args.out, text)
    return 1 if flips else 0


def cmd_report(args: argparse.Namespace) -> int:
    from lvas.report.generate import report_sweep, write_index
    from lvas.sweepspec import load_sweep
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
        res = report_sweep(spec, uri, args.out, figures=not args.no_figures, samples=args.samples, force=args.force,
                           columns=[c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None)
        print(f"{spec.name}: " + ", ".join(str(t) for t in res["tables"][:1])
              + f" (+ .tex .csv), {len(res['figures'])} figure(s)"
              + (f"; missing rows: {', '.join(res['missing'])}" if res["missing"] else ""))
        from lvas.sweep.parent import ui_link

        link = ui_link(spec, uri)
        if link:
            print(f"  MLflow UI: {link}")
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
