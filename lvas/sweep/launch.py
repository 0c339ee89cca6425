"""Starting a sweep on this machine: the coordinator (``lvas sweep``) initialises the study, runs
trials in its own process or in ``--workers`` child processes, replaces workers that die, and stops
them all when it is interrupted (Ctrl-C or SIGTERM), ending the parent run KILLED."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from lvas.config import redact
from lvas.signals import child_env, python_command, reason
from lvas.sweep.progress import Progress, summary
from lvas.sweep.runner import SweepOptions, SweepRunner
from lvas.sweep.study import STORAGE_ENV
from lvas.sweepspec import SweepSpec

OVERRIDES_ENV = "LVAS_SWEEP_OVERRIDES"  # a worker's command-line overrides (JSON list), kept off its argv
STOP_GRACE = 120.0  # seconds workers get to stop after SIGTERM before they are killed


def run_sweep(spec: SweepSpec, opts: SweepOptions, workers: int = 1) -> tuple[int, SweepRunner]:
    """The ``lvas sweep`` command: initialise, run (in this process or ``workers`` children), close.

    A worker that dies (killed, out of memory) is replaced while trials are left, at most ``3 x workers``
    times; its trial is recovered (re-enqueued and resumed from its last checkpoint). Returns the exit
    status (0 when no trial failed, 1 otherwise) and the runner.
    """
    runner = SweepRunner(spec, opts)
    runner.open_study()
    procs: list[subprocess.Popen] = []
    try:
        runner.own_parent()  # inside: a stop while the parent run is being reopened still ends it KILLED
        rec = runner.recover()
        if rec["interrupted"] or rec["retried"]:
            print(f"[{spec.name}] re-enqueued {rec['interrupted']} interrupted and {rec['retried']} failed trial(s)")
        progress = Progress(runner, parallel=workers)
        if workers <= 1:
            if opts.gpus:
                os.environ["CUDA_VISIBLE_DEVICES"] = opts.gpus[0]
            runner.work(progress)
        else:
            _run_workers(runner, opts, workers, progress, procs)
        progress.tick(force=True)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM (lvas.signals): stop the workers, then close
        stop_workers(procs)
        runner.recover()
        runner.finish("KILLED", reason(e))
        raise
    except BaseException as e:
        stop_workers(procs)
        runner.finish("FAILED", redact(f"{type(e).__name__}: {e}"))
        raise
    ok = runner.finish()
    print(summary(runner).drop(columns=["key"]).to_markdown(index=False))
    return (0 if ok else 1), runner


def worker_env(runner: SweepRunner, opts: SweepOptions, workers: int, i: int) -> dict[str, str]:
    """A worker's environment: the storage URL and tracking URI travel here, never on its command
    line (which ``ps`` shows to every user of the machine)."""
    env = child_env({"LVAS_PARALLEL_TRIALS": str(workers if not opts.gpus else 1),
                     "MLFLOW_TRACKING_URI": runner.tracking_uri})
    if opts.storage:
        env[STORAGE_ENV] = opts.storage
    env[OVERRIDES_ENV] = json.dumps(list(runner.spec.cli_overrides))
    if opts.gpus:
        env["CUDA_VISIBLE_DEVICES"] = opts.gpus[i % len(opts.gpus)]
    return env


def worker_command(spec: SweepSpec, opts: SweepOptions) -> list[str]:
    return python_command("-m", "lvas.cli", "sweep", str(spec.path), "--worker", "--out", opts.out,
                          "--stale-after", str(opts.stale_after)) + (["--quiet"] if not opts.progress else []) + \
        (["--gpus-per-trial", str(opts.gpus_per_trial)] if opts.gpus_per_trial > 1 else [])


def _run_workers(runner: SweepRunner, opts: SweepOptions, workers: int, progress: Progress,
                 procs: list[subprocess.Popen]) -> None:
    spec = runner.spec
    cmd = worker_command(spec, opts)
    procs.extend(subprocess.Popen(cmd, env=worker_env(runner, opts, workers, i)) for i in range(workers))
    respawns, judged = 3 * workers, set()
    while any(p.poll() is None for p in procs):
        progress.tick()
        time.sleep(2.0)
        for i, p in enumerate(procs):
            if p.poll() is not None and p.returncode != 0 and respawns > 0 and p.pid not in judged:
                judged.add(p.pid)  # each dead worker is looked at once
                runner.recover()
                if runner.claimable():
                    print(f"[{spec.name}] worker {i} exited with {p.returncode}; starting another", file=sys.stderr,
                          flush=True)
                    procs[i] = subprocess.Popen(cmd, env=worker_env(runner, opts, workers, i))
                    respawns -= 1
    codes = [p.wait() for p in procs]
    if any(codes):
        print(f"[{spec.name}] worker exit codes: {codes}", file=sys.stderr)
    runner.recover()
    if runner.claimable():  # the last worker died with trials left: finish them here
        runner.work(progress)


def stop_workers(procs: list[subprocess.Popen], grace: float = STOP_GRACE) -> None:
    """SIGTERM to every live worker (each ends its trial's MLflow run KILLED and exits), then wait; a
    worker still alive after ``grace`` seconds is killed."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_worker(spec: SweepSpec, opts: SweepOptions) -> int:
    """A worker process: claim and run trials until none is left."""
    runner = SweepRunner(spec, opts)
    runner.open_study(sync_file=False)
    runner.work()
    return 0
