"""A sweep on a SLURM cluster (``lvas sweep SWEEP.yaml --launcher slurm --workers N``).

The coordinator (this machine, usually a login node) initialises the study and the MLflow parent
run exactly as ``lvas sweep`` does, then submits one SLURM job array of N tasks through submitit
(the library Hydra's SLURM launcher uses). Each array task runs the normal worker loop
(:func:`lvas.sweep.launch.run_worker`): claim a trial from the shared study, train it, record it in
MLflow, take the next, until none is left. So the cluster needs what several machines need anyway
(README, "Several machines"): the study in a journal file under ``--out`` on a shared filesystem (or
``--storage`` PostgreSQL) and an MLflow store every node reaches. The last task to find nothing
left closes the parent run.

``--gpus-per-trial K`` makes every task hold K GPUs and run each trial under torchrun on them.
``--slurm key=value`` passes submitit's parameters (``slurm_partition=gpu``, ``cpus_per_task=8``,
``timeout_min=2880``, ``gpus_per_node=0`` on a CPU-only cluster, ``slurm_account=...``: any key of
``submitit.AutoExecutor.update_parameters``; a key it does not know is refused by submitit, naming
it). Defaults: one task per worker, K GPUs each (``gpus_per_node``), 24 h. Secrets (a storage URL
with a password, MLflow credentials) travel in the environment sbatch exports, never in the pickled
job nor on a command line.

``lvas sweep`` returns once the array is submitted and prints its job id; ``--wait`` shows the usual
progress line until the tasks end. Rerunning the same command resumes (finished trials are kept,
interrupted ones re-enqueued); ``lvas sweep SWEEP.yaml --status`` reads the progress from the study
and the array's state from SLURM (``jobs.json`` under the sweep's folder lists what was submitted).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from lvas.config import ConfigError, shown
from lvas.sweep.launch import OVERRIDES_ENV, run_worker
from lvas.sweep.progress import Progress, summary
from lvas.sweep.runner import SweepOptions, SweepRunner, sweep_dir
from lvas.sweep.study import STORAGE_ENV
from lvas.sweepspec import SweepSpec, load_sweep

DEFAULT_TIMEOUT_MIN = 24 * 60


INT_KEYS = ("timeout_min", "nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task", "slurm_array_parallelism")
NUMBER_KEYS = ("mem_gb",)
BOOL_KEYS = ("stderr_to_stdout",)
# what a value written into an `#SBATCH --key=value` line may hold: no whitespace (sbatch reads the rest of
# the line as more options: `x --output=/elsewhere`), no newline (a shell line in the job script), no quotes
# or shell characters
_DIRECTIVE_VALUE = re.compile(r"[A-Za-z0-9_.,:=/@+%*\[\]{}-]*")


def parse_slurm_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs (YAML scalars: ``cpus_per_task=8`` is an int) into submitit parameters,
    checked before anything is written: numbers where SLURM wants numbers, and values a job script's
    ``#SBATCH`` line can hold (no newline, whitespace, quote or shell character). One line names the
    key otherwise."""
    from lvas.yamlio import load

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--slurm {shown(item)}: expected key=value (e.g. slurm_partition=gpu, cpus_per_task=8)")
        if any(ord(c) < 32 for c in item):
            raise ConfigError(f"--slurm {key}: a newline or control character in the value (a job script line "
                              f"holds one value)")
        try:
            value = load(text) if text else ""
        except Exception:  # noqa: BLE001 - YAML errors: the value is then taken as written
            value = text
        out[key] = _checked(key, value, text)
    return out


def _checked(key: str, value: Any, text: str) -> Any:
    if key in INT_KEYS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"--slurm {key}: {shown(value if text.strip()[:1] in '[{' else text)}: expected an "
                              f"integer >= 0")
        return value
    if key in NUMBER_KEYS:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"--slurm {key}: {shown(text)}: expected a number > 0")
        return value
    if key in BOOL_KEYS:
        if not isinstance(value, bool):
            raise ConfigError(f"--slurm {key}: {shown(text)}: expected true or false")
        return value
    for v in _scalars(value):
        if isinstance(v, str) and not _DIRECTIVE_VALUE.fullmatch(v):
            raise ConfigError(f"--slurm {key}: {shown(v)}: a SLURM directive value cannot hold spaces, quotes or "
                              f"shell characters (letters, digits and _.,:=/@+%*-[] only)")
    return value


def _scalars(value: Any):
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _scalars(v)
    elif isinstance(value, list):
        for v in value:
            yield from _scalars(v)
    else:
        yield value


def _array_task(sweep_path: str, opts: dict[str, Any]) -> int:
    """One array task on a compute node: the normal worker loop, then close the parent run if no
    trial is left anywhere (the environment carries the storage, tracking URI and overrides)."""
    overrides = json.loads(os.environ.get(OVERRIDES_ENV, "[]"))
    spec = load_sweep(sweep_path, overrides)
    options = SweepOptions(**{**opts, "storage": os.environ.get(STORAGE_ENV) or None,
                              "tracking_uri": os.environ.get("MLFLOW_TRACKING_URI")})
    run_worker(spec, options)
    runner = SweepRunner(spec, options)
    runner.open_study(sync_file=False)
    runner.recover()
    if not runner.claimable():
        runner.finish()
    return 0


def _folder(runner: SweepRunner) -> Path:
    return sweep_dir(runner.spec, runner.opts) / "slurm"


def submit(spec: SweepSpec, opts: SweepOptions, workers: int, params: dict[str, Any],
           wait: bool = False) -> tuple[int, str, bool]:
    """Initialise the study and the parent run, submit the array; with ``wait``, follow it to the end.
    Returns (exit status, tracking URI, whether the sweep is done)."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher slurm needs submitit: pip install 'lvas[slurm]'") from None
    folder = sweep_dir(spec, opts) / "slurm"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    defaults = {"timeout_min": DEFAULT_TIMEOUT_MIN, "gpus_per_node": opts.gpus_per_trial, "tasks_per_node": 1,
                "nodes": 1, "name": f"lvas-{spec.name}", "slurm_array_parallelism": workers}
    try:  # checked before anything is created
        executor.update_parameters(**{**defaults, **params})
    except (TypeError, ValueError, NameError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--slurm: {first} (generic keys: timeout_min, mem_gb, cpus_per_task, gpus_per_node, "
                          f"nodes, name; SLURM's own with the slurm_ prefix, e.g. slurm_partition)") from None
    runner = SweepRunner(spec, opts)
    runner.open_study()
    runner.own_parent()
    rec = runner.recover()
    if rec["interrupted"] or rec["retried"]:
        print(f"[{spec.name}] re-enqueued {rec['interrupted']} interrupted and {rec['retried']} failed trial(s)")
    if not runner.claimable():
        print(f"[{spec.name}] nothing left to run")
        ok = runner.finish()
        print(summary(runner).drop(columns=["key"]).to_markdown(index=False))
        return (0 if ok else 1), runner.tracking_uri, True
    os.environ["MLFLOW_TRACKING_URI"] = runner.tracking_uri
    os.environ[OVERRIDES_ENV] = json.dumps(list(spec.cli_overrides))
    os.environ["LVAS_PARALLEL_TRIALS"] = "1"  # each task has its own CPUs
    os.environ["PYTHONSAFEPATH"] = "1"  # the job never imports from its working directory (lvas.signals)
    if opts.storage:
        os.environ[STORAGE_ENV] = opts.storage
    task_opts = {"out": str(Path(opts.out).resolve()), "stale_after": opts.stale_after, "progress": False,
                 "gpus_per_trial": opts.gpus_per_trial, "retry_failed": False}
    try:
        jobs = executor.map_array(_array_task, [str(Path(spec.path).resolve())] * workers, [task_opts] * workers)
    except Exception as e:  # noqa: BLE001 - sbatch's refusal (a wrong partition, account, limit) in one line
        msg = " ".join(str(e).split())[:400]
        raise ConfigError(f"--launcher slurm: sbatch refused the array ({type(e).__name__}: {msg}); the study is kept, "
                          f"fix --slurm and run the same command again") from None
    record = _folder(runner) / "jobs.json"
    old = json.loads(record.read_text()) if record.is_file() else []
    record.write_text(json.dumps(old + [{"submitted": time.time(), "job_ids": [j.job_id for j in jobs],
                                         "params": {k: str(v) for k, v in {**defaults, **params}.items()}}], indent=1))
    array = jobs[0].job_id.split("_")[0]
    print(f"[{spec.name}] submitted SLURM array {array}: {workers} task(s); logs in {_folder(runner)}; "
          f"`lvas sweep {spec.path} --status` shows progress; the same command again resumes")
    if not wait:
        return 0, runner.tracking_uri, False
    progress = Progress(runner, parallel=workers)
    while _unfinished(array, jobs):
        progress.tick()
        time.sleep(2.0)
    failed = [j.job_id for j in jobs if not _succeeded(j)]
    if failed:
        print(f"[{spec.name}] array task(s) {failed} ended without success; logs in {_folder(runner)}", flush=True)
    runner.recover()
    progress.tick(force=True)
    ok = runner.finish()
    print(summary(runner).drop(columns=["key"]).to_markdown(index=False))
    return (0 if ok and not failed else 1), runner.tracking_uri, not runner.claimable()


def status(spec: SweepSpec, opts: SweepOptions) -> tuple[int, str, bool]:
    """Progress from the study, and the submitted arrays' states from SLURM (when submitit can ask)."""
    runner = SweepRunner(spec, opts, create=False)
    runner.open_study(sync_file=False)
    print(Progress(runner).line())
    record = _folder(runner) / "jobs.json"
    if record.is_file():
        states = _job_states([i for sub in json.loads(record.read_text()) for i in sub["job_ids"]], _folder(runner))
        if states:
            print("SLURM: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    print(summary(runner).drop(columns=["key"]).to_markdown(index=False))
    counts = Progress(runner).counts()
    return 0, runner.tracking_uri, counts["running"] == 0 and counts["waiting"] == 0


def _queued(array: str) -> bool | None:
    """Whether any task of the array is still pending or running (``squeue``), None if SLURM cannot be
    asked. (submitit asks ``sacct``, which needs SLURM's accounting database; squeue does not.)"""
    import subprocess

    try:
        p = subprocess.run(["squeue", "-h", "-r", "-j", array, "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return False if "Invalid job id" in p.stderr else None
    return bool(p.stdout.strip())


def _unfinished(array: str, jobs) -> bool:
    queued = _queued(array)
    return queued if queued is not None else not all(j.done() for j in jobs)


def _succeeded(job) -> bool:
    """The task returned (submitit wrote its result, not an exception)."""
    import logging

    logging.getLogger("submitit").setLevel(logging.ERROR)
    try:
        return job.paths.result_pickle.exists() and job.exception() is None
    except Exception:  # noqa: BLE001 - an unreadable result is a failed task
        return False


def _job_states(job_ids: list[str], folder: Path) -> dict[str, int]:
    """How many of ``job_ids`` are in each state: SLURM's while queued, then whether the task returned
    (empty when SLURM cannot be asked from here)."""
    import subprocess

    try:
        p = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=60)
        queued = dict(line.split() for line in p.stdout.splitlines() if line.strip()) if p.returncode == 0 else None
        if queued is None:
            return {}
        import submitit

        counts: dict[str, int] = {}
        for i in job_ids:
            job = submitit.SlurmJob(folder=folder / "%j", job_id=i)
            s = queued.get(i) or ("COMPLETED" if _succeeded(job) else "ENDED (see its log)")
            counts[s] = counts.get(s, 0) + 1
        return counts
    except Exception:  # noqa: BLE001 - status is informative; the study's progress above is the truth
        return {}
