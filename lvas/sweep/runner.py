"""Running a sweep: trial state in an Optuna study, every trial a nested MLflow run.

* Storage: ``--storage`` (an Optuna RDB URL such as ``postgresql://...``), default a journal file
  ``<out>/<sweep>/optuna.journal`` (safe for several processes on one machine).
* The process that creates the study initialises it once: the MLflow parent run, and for grid
  sweeps every grid point enqueued as a WAITING trial. Workers claim WAITING trials atomically
  (``set_trial_state_values`` WAITING -> RUNNING succeeds for exactly one claimant), so no grid
  point runs twice.
* Re-running the same command resumes: COMPLETE/PRUNED points are skipped; a RUNNING trial whose
  worker is gone (dead pid on this host, or no heartbeat for ``--stale-after`` seconds) is marked
  FAIL (``interrupted``) and re-enqueued, and its rerun continues from the checkpoint in its trial
  folder (``<out>/<sweep>/trials/<key>``) and the same MLflow run; FAILed points are re-enqueued
  only with ``--retry-failed``.
* A crashing trial is recorded FAIL (Optuna) / FAILED (MLflow, with traceback) and the sweep goes on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvas.sweep.spec import SweepSpec, Trial

HOST = socket.gethostname()


@dataclass
class SweepOptions:
    storage: str | None = None
    tracking_uri: str | None = None
    out: str = "runs/sweeps"
    retry_failed: bool = False
    stale_after: float = 600.0
    progress: bool = True
    gpus: list[str] | None = None
    gpus_per_trial: int = 1


def sweep_dir(spec: SweepSpec, opts: SweepOptions) -> Path:
    return Path(opts.out).resolve() / spec.name


def storage_for(spec: SweepSpec, opts: SweepOptions):
    import optuna

    if opts.storage:
        if opts.storage.startswith(("postgresql", "mysql")):
            # Machines started together race to create the schema on a fresh database: retry.
            import random
            import warnings

            for attempt in range(8):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        return optuna.storages.RDBStorage(opts.storage, heartbeat_interval=60, grace_period=180)
                except Exception:  # noqa: BLE001 - sqlalchemy IntegrityError/ProgrammingError on the race
                    if attempt == 7:
                        raise
                    time.sleep(0.5 + random.random())
        return opts.storage
    path = sweep_dir(spec, opts) / "optuna.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _sampler(spec: SweepSpec):
    import optuna

    if spec.method == "bayes":
        return optuna.samplers.TPESampler(seed=spec.seed)
    return optuna.samplers.RandomSampler(seed=spec.seed)


def _pruner(spec: SweepSpec):
    import optuna

    et = spec.early_terminate
    if not et:
        return optuna.pruners.NopPruner()
    if et["type"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=int(et.get("min_iter", 1)))
    return optuna.pruners.HyperbandPruner(min_resource=int(et.get("min_iter", 1)),
                                          max_resource=et.get("max_iter", "auto"),
                                          reduction_factor=int(et.get("eta", 3)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SweepRunner:
    def __init__(self, spec: SweepSpec, opts: SweepOptions) -> None:
        self.spec, self.opts = spec, opts
        self.dir = sweep_dir(spec, opts)
        self.dir.mkdir(parents=True, exist_ok=True)
        from lvas.tracking import resolve_uri

        self.tracking_uri = resolve_uri(opts.tracking_uri)
        self.study = None

    # ------------------------------------------------------------------ study
    def open_study(self):
        """Create (and initialise) or load the study; returns it."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = storage_for(self.spec, self.opts)
        direction = "maximize" if self.spec.goal == "maximize" else "minimize"
        try:
            study = optuna.create_study(study_name=self.spec.name, storage=storage, direction=direction,
                                        sampler=_sampler(self.spec), pruner=_pruner(self.spec))
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=self.spec.name, storage=storage, sampler=_sampler(self.spec),
                                      pruner=_pruner(self.spec))
            created = False
        if created:
            self._initialise(study)
        deadline = time.time() + 120
        while "initialised" not in study.user_attrs:
            if time.time() > deadline:
                raise RuntimeError(f"study {self.spec.name} exists but was never initialised "
                                   f"(its creator died?): delete it from the storage and start again")
            time.sleep(0.5)
        self.study = study
        return study

    def _initialise(self, study) -> None:
        from mlflow import MlflowClient

        from lvas.tracking import quiet_mlflow

        with quiet_mlflow():
            client = MlflowClient(self.tracking_uri)
            exp = client.get_experiment_by_name(self.spec.name)
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(self.spec.name)
            run = client.create_run(exp_id, run_name=self.spec.name,
                                    tags={"sweep": self.spec.name, "report": self.spec.report,
                                          "method": self.spec.method, "lvas_role": "sweep"})
            run_id = run.info.run_id
            client.log_text(run_id, self.spec.path.read_text(), "sweep.yaml")
            for k, v in {"sweep.method": self.spec.method, "sweep.metric": self.spec.metric,
                         "sweep.base": str(self.spec.base), "sweep.report": self.spec.report}.items():
                client.log_param(run_id, k, v)
        study.set_user_attr("mlflow_parent_run_id", run_id)
        study.set_user_attr("sweep_file", str(self.spec.path))
        if self.spec.method == "grid":
            for t in self.spec.grid():
                self._enqueue(study, t, attempt=0)
        study.set_user_attr("initialised", True)

    def _enqueue(self, study, t: Trial, attempt: int) -> None:
        params = {"variant": t.label, **{k: _plain(v) for k, v in t.params.items()}}
        study.enqueue_trial(params, user_attrs={"key": t.key, "label": t.label, "attempt": attempt,
                                                "overrides": json.dumps(t.overrides, default=str)})

    @property
    def parent_run_id(self) -> str:
        return self.study.user_attrs["mlflow_parent_run_id"]

    # ------------------------------------------------------------------ state
    def latest_by_key(self) -> dict[str, Any]:
        """The newest Optuna trial of every trial key."""
        latest: dict[str, Any] = {}
        for t in self.study.get_trials(deepcopy=False):
            key = t.user_attrs.get("key")
            if key is None:
                continue
            if key not in latest or t.number > latest[key].number:
                latest[key] = t
        return latest

    def recover(self) -> dict[str, int]:
        """Re-enqueue interrupted trials (and failed ones with ``retry_failed``)."""
        import optuna
        from optuna.trial import TrialState

        counts = {"interrupted": 0, "retried": 0}
        storage = self.study._storage
        now = time.time()
        for key, t in self.latest_by_key().items():
            if t.state == TrialState.RUNNING:
                host, pid = t.user_attrs.get("host"), t.user_attrs.get("pid")
                beat = t.user_attrs.get("heartbeat", 0)
                dead = (host == HOST and pid is not None and not _pid_alive(int(pid))) or now - beat > self.opts.stale_after
                if not dead:
                    continue
                try:
                    storage.set_trial_user_attr(t._trial_id, "interrupted", True)
                    storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                    continue  # another worker recovered it first
                self._enqueue(self.study, self._trial_of(t), attempt=int(t.user_attrs.get("attempt", 0)))
                counts["interrupted"] += 1
            elif t.state == TrialState.FAIL and self.opts.retry_failed and not t.user_attrs.get("interrupted"):
                self._enqueue(self.study, self._trial_of(t), attempt=int(t.user_attrs.get("attempt", 0)) + 1)
                counts["retried"] += 1
        return counts

    def _trial_of(self, frozen) -> Trial:
        params = frozen.params or frozen.system_attrs.get("fixed_params", {})
        params = {k: v for k, v in params.items() if k != "variant"}
        return Trial(frozen.user_attrs["label"], json.loads(frozen.user_attrs["overrides"]), params)

    # ------------------------------------------------------------------ work
    def claim(self):
        """Atomically take one WAITING trial; None when there is none left."""
        import optuna
        from optuna.trial import TrialState

        storage = self.study._storage
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                if storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                    return optuna.trial.Trial(self.study, t._trial_id)
            except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                continue
        return None

    def _space_trial(self, trial) -> Trial:
        """Sample (or read back the fixed) parameters of an Optuna trial."""
        labels = self.spec.labels()
        label = trial.suggest_categorical("variant", labels)
        params = {}
        for p in self.spec.parameters:
            if p.is_discrete:
                params[p.name] = trial.suggest_categorical(p.name, [_plain(v) for v in p.values])
            elif p.distribution == "uniform":
                params[p.name] = trial.suggest_float(p.name, p.min, p.max)
            elif p.distribution == "log_uniform_values":
                params[p.name] = trial.suggest_float(p.name, p.min, p.max, log=True)
            elif p.distribution == "int_uniform":
                params[p.name] = trial.suggest_int(p.name, int(p.min), int(p.max))
            else:
                params[p.name] = trial.suggest_float(p.name, p.min, p.max, step=p.q)
        t = self.spec.trial_for(label, params)
        for k, v in (("key", t.key), ("label", t.label), ("overrides", json.dumps(t.overrides, default=str))):
            if k not in trial.user_attrs:
                trial.set_user_attr(k, v)
        return t

    def run_one(self, trial) -> str:
        """Run one claimed trial to its end; returns its final state name."""
        import optuna

        from lvas.engine.trainer import train_experiment

        t = self._space_trial(trial)
        attempt = int(trial.user_attrs.get("attempt", 0))
        trial.set_user_attr("host", HOST)
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("heartbeat", time.time())
        run_dir = self.dir / "trials" / (t.key if attempt == 0 else f"{t.key}-retry{attempt}")
        cfg = self.spec.config_for(t)
        cfg.train.stage1_cache = str(self.dir / "stage1_cache")
        resume = (run_dir / "last.pt").is_file()
        metric = self.spec.metric

        def report(epoch: int, metrics: dict[str, float]) -> None:
            trial.set_user_attr("heartbeat", time.time())
            value = metrics.get(metric)
            if value is not None and value == value:
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch} ({metric} {value:.2f})")

        if self.opts.progress:
            print(f"[{self.spec.name}] trial {trial.number} {t.label} {t.params or ''}"
                  + (" (resuming)" if resume else ""), flush=True)
        tags = {"sweep": self.spec.name, "variant": t.label, "trial_key": t.key,
                "optuna_trial": str(trial.number), "report": self.spec.report}
        try:
            if self.opts.gpus_per_trial > 1:
                scores, run_id = self._run_torchrun(cfg, run_dir, resume, t.label, tags)
            else:
                result, run_id = train_experiment(
                    cfg, run_dir, resume=resume, tracking_uri=self.tracking_uri, experiment=self.spec.name,
                    parent_run_id=self.parent_run_id, run_name=t.label, extra_tags=tags,
                    progress=self.opts.progress, epoch_callback=report)
                scores = result.test if self.spec.method == "grid" else \
                    {k[4:]: v for k, v in result.selected.items() if k.startswith("val/")}
        except optuna.TrialPruned:
            self._set_run(trial, run_dir)
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return "PRUNED"
        except KeyboardInterrupt:
            raise  # leave the trial RUNNING: the next run resumes it
        except Exception as e:  # noqa: BLE001 - one trial's crash must not stop the sweep
            self._set_run(trial, run_dir)
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            print(f"[{self.spec.name}] trial {trial.number} {t.label} FAILED: {type(e).__name__}: {e}",
                  file=sys.stderr, flush=True)
            return "FAIL"
        trial.set_user_attr("mlflow_run_id", run_id or "")
        # a grid runs every point (nothing is chosen); a search chooses, so it is told validation scores only
        self.study.tell(trial, scores.get(metric, float("nan")))
        return "COMPLETE"

    def _run_torchrun(self, cfg, run_dir: Path, resume: bool, label: str, tags: dict) -> tuple[dict, str]:
        """One trial on ``gpus_per_trial`` processes (DDP through torchrun); pruning is not available."""
        from lvas.config import to_yaml
        from lvas.engine.checkpoint import load_checkpoint

        run_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = run_dir / "trial_config.yaml"
        cfg_path.write_text(to_yaml(cfg))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={self.opts.gpus_per_trial}", "-m", "lvas.cli", "train", str(cfg_path),
               "--run-dir", str(run_dir), "--tracking-uri", self.tracking_uri, "--experiment-name", self.spec.name,
               "--parent-run-id", self.parent_run_id, "--run-name", label, "--tags", json.dumps(tags)]
        if resume:
            cmd.append("--resume")
        if not self.opts.progress:
            cmd.append("--quiet")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"torchrun exited with {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
        if self.spec.method == "grid":
            scores = json.loads((run_dir / "test_metrics.json").read_text())
        else:
            selected = load_checkpoint(run_dir / "model.pt").get("selected", {})
            scores = {k[4:]: v for k, v in selected.items() if k.startswith("val/")}
        return scores, (run_dir / "mlflow_run_id").read_text().strip()

    @staticmethod
    def _set_run(trial, run_dir: Path) -> None:
        f = run_dir / "mlflow_run_id"
        if f.is_file():
            trial.set_user_attr("mlflow_run_id", f.read_text().strip())

    def work(self) -> None:
        """Claim and run trials until none is left (grid) or the run cap is reached."""
        while True:
            if self.spec.method == "grid":
                trial = self.claim()
            else:
                n = len([t for t in self.study.get_trials(deepcopy=False) if not t.user_attrs.get("interrupted")])
                trial = self.claim()
                if trial is None and n < (self.spec.run_cap or 0):
                    trial = self.study.ask()
            if trial is None:
                return
            self.run_one(trial)

    def finish(self) -> bool:
        """Close the MLflow parent run when no trial is waiting or running; True if none failed."""
        from mlflow import MlflowClient
        from optuna.trial import TrialState

        latest = self.latest_by_key()
        active = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))]
        failed = [t for t in latest.values() if t.state == TrialState.FAIL]
        if not active:
            MlflowClient(self.tracking_uri).set_terminated(self.parent_run_id, "FAILED" if failed else "FINISHED")
        return not failed

    def summary(self):
        """One row per trial key: label, parameters, state, metric, trial number, MLflow run."""
        import pandas as pd

        rows = []
        for key, t in sorted(self.latest_by_key().items(), key=lambda kv: kv[1].number):
            params = {k: v for k, v in (t.params or t.system_attrs.get("fixed_params", {})).items() if k != "variant"}
            rows.append({"trial": t.number, "variant": t.user_attrs.get("label"),
                         "params": json.dumps(params) if params else "", "state": t.state.name,
                         self.spec.metric: t.value if t.value is not None else float("nan"),
                         "mlflow_run": t.user_attrs.get("mlflow_run_id", ""), "key": key})
        return pd.DataFrame(rows)


def _plain(v: Any) -> Any:
    """Optuna categorical choices must be None/bool/int/float/str: lists become their JSON."""
    return v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v)


def dry_run_table(spec: SweepSpec):
    import pandas as pd

    if spec.method == "grid":
        rows = [{"#": i, "variant": t.label, "params": json.dumps(t.params) if t.params else "",
                 "overrides": " ".join(t.override_list()), "key": t.key} for i, t in enumerate(spec.grid())]
        return pd.DataFrame(rows)
    rows = [{"parameter": "variant", "space": ", ".join(spec.labels())}]
    for p in spec.parameters:
        space = ", ".join(map(str, p.values)) if p.is_discrete else f"{p.distribution}[{p.min}, {p.max}]" + (
            f" q={p.q}" if p.q else "")
        rows.append({"parameter": p.name, "space": space})
    return pd.DataFrame(rows)


def run_sweep(spec: SweepSpec, opts: SweepOptions, workers: int = 1) -> int:
    """The ``lvas sweep`` command: initialise, run (in this process or ``workers`` children), summarise.

    Returns the exit status: 0 when no trial failed, 1 otherwise.
    """
    runner = SweepRunner(spec, opts)
    runner.open_study()
    rec = runner.recover()
    if rec["interrupted"] or rec["retried"]:
        print(f"[{spec.name}] re-enqueued {rec['interrupted']} interrupted and {rec['retried']} failed trial(s)")
    if workers <= 1:
        if opts.gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = opts.gpus[0]
        runner.work()
    else:
        procs = []
        for i in range(workers):
            env = dict(os.environ)
            if opts.gpus:
                env["CUDA_VISIBLE_DEVICES"] = opts.gpus[i % len(opts.gpus)]
            cmd = [sys.executable, "-m", "lvas.cli", "sweep", str(spec.path), "--worker", "--out", opts.out,
                   "--tracking-uri", runner.tracking_uri, "--stale-after", str(opts.stale_after)]
            if opts.storage:
                cmd += ["--storage", opts.storage]
            if not opts.progress:
                cmd.append("--quiet")
            procs.append(subprocess.Popen(cmd, env=env))
        codes = [p.wait() for p in procs]
        if any(codes):
            print(f"[{spec.name}] worker exit codes: {codes}", file=sys.stderr)
    ok = runner.finish()
    table = runner.summary()
    print(table.drop(columns=["key"]).to_markdown(index=False))
    return 0 if ok else 1


def run_worker(spec: SweepSpec, opts: SweepOptions) -> int:
    runner = SweepRunner(spec, opts)
    runner.open_study()
    runner.work()
    return 0
