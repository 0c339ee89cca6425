"""Running one claimed trial: its point (sampled for a search), its folder, its tracked training (in
this process, or on ``--gpus-per-trial`` processes through torchrun), and its outcome told to the study."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from lvas.config import ConfigError, redact, to_yaml
from lvas.liveness import Heartbeat
from lvas.signals import child_env, python_command
from lvas.sweepspec import Trial


def row_description(spec, t: Trial) -> str:
    """A trial run's description in the MLflow UI: the row, what it changes, the sweep."""
    variant = next((v for v in spec.variants if v.label == t.label), None)
    changes = {**(variant.overrides if variant else {}), **t.params}
    text = f"Row **{t.label}**" + (f", seed {t.seed}" if t.seed is not None else "") + f" of sweep `{spec.name}`"
    if variant is not None and variant.base is not None:
        text += f" (base: `{variant.base.name}`)"
    if changes:
        text += ": " + ", ".join(f"`{k}={json.dumps(v)}`" for k, v in changes.items())
    return redact(text + (f".\n\n{spec.description}" if spec.description else "."))


def space_trial(runner, trial) -> Trial:
    """Sample (or read back the fixed) parameters of an Optuna trial; the seed comes from its
    attributes (a sampled point runs with the first seed)."""
    spec = runner.spec
    if "id" in trial.user_attrs and spec.method == "grid":  # enqueued: its attributes name the trial
        return runner.trial_of(trial)
    try:
        label, params = suggest(spec, trial)
    except ValueError as e:  # Optuna: a distribution differs from the one the study began with
        raise ConfigError(f"{spec.path}: parameters / variants: the search space changed since the study "
                          f"began ({e}); a search cannot change its space: give the sweep a new name") from None
    if "id" in trial.user_attrs:  # an enqueued re-run (top-k seeds)
        return runner.trial_of(trial)
    t = spec.trial_for(label, params, spec.seeds.values[0])
    for k, v in runner.trial_attrs(t, 0, "search").items():
        trial.set_user_attr(k, v)
    return t


def suggest(spec, trial) -> tuple[str, dict]:
    from lvas.sweep.study import plain

    label = trial.suggest_categorical("variant", spec.labels())
    params = {}
    for p in spec.parameters:
        if p.is_discrete:
            params[p.name] = trial.suggest_categorical(p.name, [plain(v) for v in p.values])
        elif p.distribution == "uniform":
            params[p.name] = trial.suggest_float(p.name, p.min, p.max)
        elif p.distribution == "log_uniform_values":
            params[p.name] = trial.suggest_float(p.name, p.min, p.max, log=True)
        elif p.distribution == "int_uniform":
            params[p.name] = trial.suggest_int(p.name, int(p.min), int(p.max))
        else:
            params[p.name] = trial.suggest_float(p.name, p.min, p.max, step=p.q)
    return label, params


def run_one(runner, trial, progress=None) -> str:
    """Run one claimed trial to its end; returns its final state name."""
    import optuna

    spec, study = runner.spec, runner.study
    t = space_trial(runner, trial)
    attempt = int(trial.user_attrs.get("attempt", 0))
    if "owner" not in trial.user_attrs:  # asked (random / bayes search), not claimed
        study.own(study.trial_id(trial))
    trial.set_user_attr("heartbeat", time.time())
    trial.set_user_attr("started", time.time())
    folder = spec.folder(t)
    run_dir = runner.dir / "trials" / (folder if attempt == 0 else f"{folder}-retry{attempt}")
    cfg = spec.config_for(t)
    if "stage1_cache" in cfg.train.recipe.settings():  # two-stage rows share their stage-1 networks
        cfg.train.recipe.stage1_cache = str(runner.dir / "stage1_cache")
    resume = (run_dir / "last.pt").is_file()
    if progress is not None:
        progress.starting(t, resume)
    elif runner.opts.progress:
        print(f"[{spec.name}] trial {trial.number} {t.name}" + (" (resuming)" if resume else ""), flush=True)
    tags = {"sweep": spec.name, "variant": t.label, "trial_key": folder, "trial_id": t.id, "point": t.point,
            "seed": str(cfg.seed), "result_hash": trial.user_attrs["result_hash"],
            "params": json.dumps(t.params, sort_keys=True, default=str),
            "phase": trial.user_attrs.get("phase", "grid"), "optuna_trial": str(trial.number), "report": spec.report}
    try:
        with Heartbeat(runner._beater(study.trial_id(trial)), runner.beat_every):
            if runner.opts.gpus_per_trial > 1:
                test, selected, run_id = _run_torchrun(runner, cfg, run_dir, resume, t.label, tags)
            else:
                test, selected, run_id = _run_here(runner, trial, t, cfg, run_dir, resume, tags)
    except optuna.TrialPruned:
        _set_run(trial, run_dir)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return "PRUNED"
    except KeyboardInterrupt:
        raise  # leave the trial RUNNING: the next run resumes it
    except Exception as e:  # noqa: BLE001 - one trial's crash must not stop the sweep
        _set_run(trial, run_dir)
        trial.set_user_attr("error", f"{type(e).__name__}: {getattr(e, 'public', e)}"[:2000])
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        print(f"[{spec.name}] trial {trial.number} {t.name} FAILED: {type(e).__name__}: {e}", file=sys.stderr,
              flush=True)
        return "FAIL"
    trial.set_user_attr("mlflow_run_id", run_id or "")
    trial.set_user_attr("finished", time.time())
    val = selected.get(f"val/{spec.metric}")
    trial.set_user_attr("test_score", test.get(spec.metric))
    if val is not None:
        trial.set_user_attr("val_score", val)
    # a grid runs every point (nothing is chosen); a search chooses, so it is told validation scores only
    told = test.get(spec.metric) if spec.method == "grid" else val
    study.tell(trial, told if told is not None else float("nan"))
    return "COMPLETE"


def _run_here(runner, trial, t: Trial, cfg, run_dir: Path, resume: bool, tags: dict):
    import optuna

    from lvas.engine.trainer import TrackOptions, train_experiment

    metric = runner.spec.metric

    def report(epoch: int, metrics: dict[str, float], stage) -> None:
        trial.set_user_attr("heartbeat", time.time())
        trial.set_user_attr("epoch", epoch)
        trial.set_user_attr("where", stage.text(epoch, _stage_epochs(stage, cfg)))
        trial.set_user_attr("progress", (stage.before + epoch) / max(1, stage.total))  # share of every stage's epochs
        value = metrics.get(metric) if stage.index == stage.count else None  # stage 1 is not the trial's metric
        if value is not None and value == value:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch} ({metric} {value:.2f})")

    track = TrackOptions(runner.tracking_uri, runner.spec.name, runner.parent_run_id, t.name, tags,
                         row_description(runner.spec, t))
    result, run_id = train_experiment(cfg, run_dir, resume=resume, track=track, progress=runner.opts.progress,
                                      epoch_callback=report)
    return result.test, result.selected, run_id


def _stage_epochs(stage, cfg) -> int:
    """The epochs of one stage of the two-stage recipe (each stage-1 network: train.epochs)."""
    return cfg.train.epochs if stage.index < stage.count else stage.total - stage.before


def _run_torchrun(runner, cfg, run_dir: Path, resume: bool, label: str, tags: dict) -> tuple[dict, dict, str]:
    """One trial on ``gpus_per_trial`` processes (DDP through torchrun); pruning is not available."""
    from lvas.engine.checkpoint import load_checkpoint

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "trial_config.yaml"
    cfg_path.write_text(to_yaml(cfg))
    cmd = python_command("-m", "torch.distributed.run", "--standalone",
                         f"--nproc_per_node={runner.opts.gpus_per_trial}", "-m", "lvas.cli", "train", str(cfg_path),
                         "--run-dir", str(run_dir), "--experiment-name", runner.spec.name,
                         "--parent-run-id", runner.parent_run_id, "--run-name", label, "--tags", json.dumps(tags))
    if resume:
        cmd.append("--resume")
    if not runner.opts.progress:
        cmd.append("--quiet")
    # the tracking URI travels in the environment, not on a command line that `ps` shows; torchrun and
    # its ranks form their own process group, stopped as one when this process is stopped
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=child_env({"MLFLOW_TRACKING_URI": runner.tracking_uri}))
    try:
        out, err = proc.communicate()
    except BaseException:
        stop_group(proc)
        _end_run_killed(runner.tracking_uri, run_dir)
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exited with {proc.returncode}: {redact((err or out)[-1500:])}")
    test = json.loads((run_dir / "test_metrics.json").read_text())
    selected = load_checkpoint(run_dir / "model.pt").get("selected", {})
    return test, selected, (run_dir / "mlflow_run_id").read_text().strip()


TORCHRUN_GRACE = 60.0  # seconds torchrun's ranks get to end their runs after SIGTERM


def stop_group(proc: subprocess.Popen, grace: float = TORCHRUN_GRACE) -> None:
    """SIGTERM to torchrun's process group (torchrun passes it to every rank, whose trainer ends its
    MLflow run KILLED), then SIGKILL to whatever is left after ``grace`` seconds."""
    import os
    import signal

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            _wait_group_gone(proc.pid, wait)
            break
        except subprocess.TimeoutExpired:
            continue


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Until no process of group ``pgid`` is left (the ranks outlive torchrun by a moment)."""
    import os

    import psutil

    end = time.time() + timeout
    while time.time() < end:
        alive = []
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(p.info["pid"]) == pgid:
                    alive.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        if not alive:
            return
        time.sleep(0.2)
    raise subprocess.TimeoutExpired("torchrun", timeout)


def _end_run_killed(tracking_uri: str, run_dir: Path) -> None:
    """A trial's MLflow run still RUNNING after its ranks were stopped (killed before they could end
    it) ends KILLED here."""
    import contextlib

    f = run_dir / "mlflow_run_id"
    if not f.is_file():
        return
    with contextlib.suppress(Exception):
        from mlflow import MlflowClient

        from lvas.tracking import END_TAG, quiet_mlflow

        with quiet_mlflow():
            client = MlflowClient(tracking_uri)
            run_id = f.read_text().strip()
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_tag(run_id, END_TAG, "stopped with the sweep that ran it; rerun the sweep to resume")
                client.set_terminated(run_id, "KILLED")


def _set_run(trial, run_dir: Path) -> None:
    f = run_dir / "mlflow_run_id"
    if f.is_file():
        trial.set_user_attr("mlflow_run_id", f.read_text().strip())
