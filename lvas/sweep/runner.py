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
* Every trial stores the hash of its resolved config (``result_hash``) and the config itself. Rerunning
  a sweep whose file changed runs the new points, reuses the unchanged finished ones, and refuses the
  changed ones (:class:`StaleSweep`, naming the keys that changed) unless ``--rerun-stale``: then they
  run again under the new config, in new folders and new MLflow runs; the report only shows runs
  whose config matches the file.
* Seeds: every point runs once per seed. Adaptive seeds (grid) and the top-k re-runs of a search are
  added when nothing is left to claim (:meth:`SweepRunner.extend`); rerunning continues them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvas.config import ConfigError, redact
from lvas.liveness import HOST, Heartbeat, clean_tmp, is_dead, process_start
from lvas.sweep.spec import SweepSpec, Trial



STORAGE_ENV = "LVAS_STORAGE"  # the Optuna storage URL, for workers and for users who keep it off argv
OVERRIDES_ENV = "LVAS_SWEEP_OVERRIDES"  # a worker's command-line overrides (JSON list), kept off its argv
CLAIM_GRACE = 30.0  # seconds a claimed trial may go without an owner before it counts as abandoned


class StaleSweep(ConfigError):
    """Trials of this sweep ran under another config than the sweep file now resolves to."""


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
    rerun_stale: bool = False


def sweep_dir(spec: SweepSpec, opts: SweepOptions) -> Path:
    return Path(opts.out).resolve() / spec.name


def storage_for(spec: SweepSpec, opts: SweepOptions):
    """The Optuna storage of the sweep; one that cannot be opened raises a ConfigError naming it."""
    try:
        return _storage(spec, opts)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - sqlalchemy / driver / OS errors: one line for the user
        where = redact(opts.storage) if opts.storage else str(sweep_dir(spec, opts) / "optuna.journal")
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"--storage {where}: cannot open the Optuna storage ({redact(first)[:300]})") from None


def _storage(spec: SweepSpec, opts: SweepOptions):
    import optuna

    if opts.storage:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if not opts.storage.startswith(("postgresql", "mysql")):
                return optuna.storages.RDBStorage(opts.storage)
            # Machines started together race to create the schema on a fresh database: retry.
            import random

            import sqlalchemy.exc

            for attempt in range(8):
                try:
                    return optuna.storages.RDBStorage(opts.storage, heartbeat_interval=60, grace_period=180)
                except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):  # the schema race
                    if attempt == 7:
                        raise
                    time.sleep(0.5 + random.random())
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


class SweepRunner:
    def __init__(self, spec: SweepSpec, opts: SweepOptions) -> None:
        self.spec, self.opts = spec, opts
        self.dir = sweep_dir(spec, opts)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--out {opts.out}: cannot create {self.dir} ({e.strerror})") from None
        if not os.access(self.dir, os.W_OK):
            raise ConfigError(f"--out {opts.out}: cannot write in {self.dir} (permission denied)")
        from lvas.tracking import open_store, resolve_uri

        self.tracking_uri = resolve_uri(opts.tracking_uri)
        open_store(self.tracking_uri)
        clean_tmp(self.dir)
        self.study = None

    # ------------------------------------------------------------------ study
    def open_study(self, sync: bool = True):
        """Create (and initialise) or load the study, then (``sync``) bring it in line with the file."""
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
        self.study = study
        if created:
            self._initialise(study)
        deadline = time.time() + 120
        while "initialised" not in study.user_attrs:
            if time.time() > deadline:
                raise RuntimeError(f"study {self.spec.name} exists but was never initialised "
                                   f"(its creator died?): delete it from the storage and start again")
            time.sleep(0.5)
        if sync and not created:
            self.sync()
        return study

    def _initialise(self, study) -> None:
        from mlflow import MlflowClient

        from lvas.tracking import NOTE_TAG, describe_experiment, quiet_mlflow

        with quiet_mlflow():
            client = MlflowClient(self.tracking_uri)
            exp = client.get_experiment_by_name(self.spec.name)
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(self.spec.name)
            describe_experiment(client, exp_id, self.spec.description or f"lvas sweep {self.spec.path.name}")
            run = client.create_run(exp_id, run_name=self.spec.name,
                                    tags={"sweep": self.spec.name, "report": self.spec.report,
                                          "method": self.spec.method, "lvas_role": "sweep",
                                          NOTE_TAG: redact(self.spec.description or "")})
            run_id = run.info.run_id
            client.log_text(run_id, redact(self.spec.path.read_text()), "sweep.yaml")
            for k, v in {"sweep.method": self.spec.method, "sweep.metric": self.spec.metric,
                         "sweep.base": str(self.spec.base), "sweep.report": self.spec.report}.items():
                client.log_param(run_id, k, v)
            if self.spec.cli_overrides:
                client.log_param(run_id, "sweep.command_line_overrides", redact(" ".join(self.spec.cli_overrides))[:6000])
        study.set_user_attr("mlflow_parent_run_id", run_id)
        study.set_user_attr("sweep_file", str(self.spec.path))
        study.set_user_attr("method", self.spec.method)
        self.sync()
        study.set_user_attr("initialised", True)

    def row_description(self, t: Trial) -> str:
        """A trial run's description in the MLflow UI: the row, what it changes, the sweep."""
        variant = next((v for v in self.spec.variants if v.label == t.label), None)
        changes = {**(variant.overrides if variant else {}), **t.params}
        text = f"Row **{t.label}**" + (f", seed {t.seed}" if t.seed is not None else "") + f" of sweep `{self.spec.name}`"
        if variant is not None and variant.base is not None:
            text += f" (base: `{variant.base.name}`)"
        if changes:
            text += ": " + ", ".join(f"`{k}={json.dumps(v)}`" for k, v in changes.items())
        return redact(text + (f".\n\n{self.spec.description}" if self.spec.description else "."))

    def _trial_attrs(self, t: Trial, attempt: int, phase: str) -> dict[str, Any]:
        """What a stored Optuna trial carries to name its lvas trial (read back by :meth:`_trial_of`)."""
        from lvas.config import result_config

        return {"id": t.id, "point": t.point, "label": t.label, "params": json.dumps(t.params, default=str),
                "seed": t.seed, "attempt": attempt, "phase": phase, "result_hash": self.spec.result_hash(t),
                "config": json.dumps(result_config(self.spec.config_for(t)), default=str)}

    def _enqueue(self, t: Trial, attempt: int, phase: str) -> None:
        params = {"variant": t.label, **{k: _plain(v) for k, v in t.params.items()}}
        self.study.enqueue_trial(params, user_attrs=self._trial_attrs(t, attempt, phase))

    @property
    def parent_run_id(self) -> str:
        return self.study.user_attrs["mlflow_parent_run_id"]

    # ------------------------------------------------------------------ spec changes
    def _trial_of(self, frozen) -> Trial | None:
        """The trial the current sweep file makes of a stored Optuna trial (None: not one of ours)."""
        a = frozen.user_attrs
        if "id" not in a:
            return None
        return self.spec.trial_for(a["label"], json.loads(a.get("params") or "{}"), a.get("seed"))

    def current_hash(self, frozen) -> str | None:
        """The result hash the sweep file now gives ``frozen`` (None: not expressible any more)."""
        t = self._trial_of(frozen)
        if t is None:
            return None
        try:
            return self.spec.result_hash(t)
        except ConfigError:
            return None

    def is_current(self, frozen) -> bool:
        """Whether ``frozen`` ran (or will run) the config the sweep file now gives it."""
        h = frozen.user_attrs.get("result_hash")
        return h is not None and h == self.current_hash(frozen)

    def sync(self) -> dict[str, int]:
        """Bring the study in line with the sweep file: enqueue points it has not seen, reuse unchanged
        ones, and refuse (:class:`StaleSweep`) or, with ``rerun_stale``, re-enqueue those whose
        resolved config changed. Returns counts of new and stale trials."""
        from optuna.trial import TrialState

        if self.study.user_attrs.get("method", self.spec.method) != self.spec.method:
            raise StaleSweep(f"{self.spec.path}: method: the study {self.spec.name!r} ran with method "
                             f"{self.study.user_attrs['method']!r}, the file now says {self.spec.method!r}: "
                             f"give the sweep a new name")
        latest = self.latest_by_id()
        wanted: dict[str, tuple[Trial, str]] = {}
        if self.spec.method == "grid":
            wanted = {t.id: (t, "grid") for t in self.spec.grid()}
            points = {(lab, json.dumps(p, sort_keys=True, default=str)) for lab, p in self.spec.points()}
        for frozen in latest.values():  # trials added later (seeds, searches) of points still in the file
            t = self._trial_of(frozen)
            if t is None or t.id in wanted:
                continue
            if self.spec.method == "grid" and (t.label, json.dumps(t.params, sort_keys=True, default=str)) not in points:
                continue
            if self.spec.method != "grid" and t.label not in self.spec.labels():
                continue
            if frozen.state == TrialState.FAIL and not frozen.user_attrs.get("interrupted"):
                continue  # a failed trial is retried with --retry-failed, not here
            wanted[t.id] = (t, frozen.user_attrs.get("phase", "grid"))
        new, stale = [], []
        for tid, (t, phase) in wanted.items():
            old = latest.get(tid)
            if old is None:
                new.append((t, phase))
            elif old.user_attrs.get("result_hash") != self.spec.result_hash(t):
                stale.append((t, phase, old))
        if stale and not self.opts.rerun_stale:
            raise StaleSweep(self._stale_message(stale))
        for t, phase, old in stale:
            if old.state == TrialState.RUNNING and not self._dead(old):
                raise StaleSweep(f"{self.spec.path}: trial {t.name} is running under the old config "
                                 f"(host {old.user_attrs.get('host')}, pid {old.user_attrs.get('pid')}): "
                                 f"wait for it or stop it before --rerun-stale")
            if old.state in (TrialState.WAITING, TrialState.RUNNING):
                self._retire(old, "superseded")
            self._enqueue(t, 0, phase)
        for t, phase in new:
            self._enqueue(t, 0, phase)
        self.study.set_user_attr("fingerprint", self.spec.fingerprint())
        if self.opts.progress and (new or stale) and "initialised" in self.study.user_attrs:
            print(f"[{self.spec.name}] the sweep file changed: {len(new)} new trial(s)"
                  + (f", {len(stale)} stale trial(s) to rerun" if stale else ""), flush=True)
        return {"new": len(new), "stale": len(stale)}

    def _stale_message(self, stale) -> str:
        from lvas.config import config_diff, result_config

        changes: dict[str, int] = {}
        for t, _, old in stale:
            before = json.loads(old.user_attrs.get("config") or "{}")
            diff = config_diff(before, result_config(self.spec.config_for(t))) if before else \
                ["(the trial was recorded without its config)"]
            for line in diff:
                changes[line] = changes.get(line, 0) + 1
        names = ", ".join(t.name for t, _, _ in stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        shown = "; ".join(line + (f" ({n} of them)" if n != len(stale) else "") for line, n in sorted(changes.items())[:12])
        more = f" (+{len(changes) - 12} more keys)" if len(changes) > 12 else ""
        return (f"{self.spec.path}: changed since {len(stale)} of its trial(s) ran ({names}): {shown}{more}. "
                f"Rerun them under the new config with --rerun-stale (the old runs stay in MLflow and leave "
                f"the report), or give the sweep a new name.")

    def _retire(self, frozen, why: str) -> bool:
        """Mark a WAITING/RUNNING trial FAIL, noting ``why``; False when it had already finished."""
        import optuna
        from optuna.trial import TrialState

        storage = self.study._storage
        try:
            storage.set_trial_user_attr(frozen._trial_id, why, True)
            storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)
            return True
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            return False

    def _dead(self, t) -> bool:
        """A RUNNING trial whose worker is gone (:func:`lvas.liveness.is_dead`): on this host its process
        no longer exists; on another host its heartbeat is older than ``stale_after``. A claimed trial
        whose worker has not written its identity yet counts as dead only after ``stale_after``."""
        a = t.user_attrs
        owner = a.get("owner") or ({"host": a["host"], "pid": a.get("pid"), "start": a.get("start")}
                                   if a.get("host") is not None else None)  # trials of older lvas versions
        if owner is None:  # the owner is written in the storage call right after the claim
            started = t.datetime_start.timestamp() if t.datetime_start else 0.0
            return time.time() - started > min(CLAIM_GRACE, self.opts.stale_after)
        return is_dead(owner["host"], owner["pid"], owner["start"], a.get("heartbeat"), self.opts.stale_after)

    def _own(self, trial_id: int) -> None:
        """Name this process as the trial's owner, in one storage write (so a kill cannot leave half
        an identity: a host without its pid would look alive forever)."""
        self.study._storage.set_trial_user_attr(trial_id, "owner", {"host": HOST, "pid": os.getpid(),
                                                                    "start": process_start()})

    # ------------------------------------------------------------------ state
    def latest_by_id(self) -> dict[str, Any]:
        """The newest Optuna trial of every trial id (duplicates and superseded trials left out)."""
        latest: dict[str, Any] = {}
        for t in self.study.get_trials(deepcopy=False):
            tid = t.user_attrs.get("id")
            if tid is None or t.user_attrs.get("duplicate") or t.user_attrs.get("superseded"):
                continue
            if tid not in latest or t.number > latest[tid].number:
                latest[tid] = t
        return latest

    def recover(self) -> dict[str, int]:
        """Re-enqueue interrupted trials (and failed ones with ``retry_failed``)."""
        from optuna.trial import TrialState

        counts = {"interrupted": 0, "retried": 0}
        for t in self.latest_by_id().values():
            trial = self._trial_of(t)
            if t.state == TrialState.RUNNING:
                if not self._dead(t) or not self._retire(t, "interrupted"):
                    continue  # alive, or another worker recovered it first
                self._enqueue(trial, int(t.user_attrs.get("attempt", 0)), t.user_attrs.get("phase", "grid"))
                counts["interrupted"] += 1
            elif t.state == TrialState.FAIL and self.opts.retry_failed and not t.user_attrs.get("interrupted"):
                self._enqueue(trial, int(t.user_attrs.get("attempt", 0)) + 1, t.user_attrs.get("phase", "grid"))
                counts["retried"] += 1
        return counts

    # ------------------------------------------------------------------ work
    def claim(self):
        """Atomically take one WAITING trial; None when there is none left.

        A claimed trial whose config the file no longer gives it is retired as superseded; one whose
        id already has an earlier live trial (two machines enqueued the same new point) as duplicate.
        """
        import optuna
        from optuna.trial import TrialState

        storage = self.study._storage
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                if not storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                    continue
            except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                continue
            self._own(t._trial_id)
            if "id" in t.user_attrs and not self.is_current(t):
                self._retire(t, "superseded")
                continue
            if "id" in t.user_attrs and self._has_earlier_twin(t):
                self._retire(t, "duplicate")
                continue
            return optuna.trial.Trial(self.study, t._trial_id)
        return None

    def _has_earlier_twin(self, t) -> bool:
        from optuna.trial import TrialState

        for o in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING,
                                                               TrialState.COMPLETE, TrialState.PRUNED)):
            if o.number < t.number and o.user_attrs.get("id") == t.user_attrs["id"] and \
                    o.user_attrs.get("result_hash") == t.user_attrs.get("result_hash") and \
                    not o.user_attrs.get("duplicate") and not o.user_attrs.get("superseded"):
                return True
        return False

    def _space_trial(self, trial) -> Trial:
        """Sample (or read back the fixed) parameters of an Optuna trial; the seed comes from its
        attributes (a sampled point runs with the first seed)."""
        if "id" in trial.user_attrs and self.spec.method == "grid":  # enqueued: its attributes name the trial
            return self._trial_of(trial)
        try:
            label, params = self._suggest(trial)
        except ValueError as e:  # Optuna: a distribution differs from the one the study began with
            raise ConfigError(f"{self.spec.path}: parameters / variants: the search space changed since the study "
                              f"began ({e}); a search cannot change its space: give the sweep a new name") from None
        if "id" in trial.user_attrs:  # an enqueued re-run (top-k seeds)
            return self._trial_of(trial)
        t = self.spec.trial_for(label, params, self.spec.seeds.values[0])
        for k, v in self._trial_attrs(t, 0, "search").items():
            trial.set_user_attr(k, v)
        return t

    def _suggest(self, trial) -> tuple[str, dict[str, Any]]:
        label = trial.suggest_categorical("variant", self.spec.labels())
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
        return label, params

    def run_one(self, trial, progress=None) -> str:
        """Run one claimed trial to its end; returns its final state name."""
        import optuna

        from lvas.engine.trainer import train_experiment

        t = self._space_trial(trial)
        attempt = int(trial.user_attrs.get("attempt", 0))
        if "owner" not in trial.user_attrs:  # asked (random / bayes search), not claimed
            self._own(trial._trial_id)
        trial.set_user_attr("heartbeat", time.time())
        trial.set_user_attr("started", time.time())
        folder = self.spec.folder(t)
        run_dir = self.dir / "trials" / (folder if attempt == 0 else f"{folder}-retry{attempt}")
        cfg = self.spec.config_for(t)
        cfg.train.stage1_cache = str(self.dir / "stage1_cache")
        resume = (run_dir / "last.pt").is_file()
        metric = self.spec.metric

        def report(epoch: int, metrics: dict[str, float]) -> None:
            trial.set_user_attr("heartbeat", time.time())
            trial.set_user_attr("epoch", epoch)
            value = metrics.get(metric)
            if value is not None and value == value:
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch} ({metric} {value:.2f})")

        if progress is not None:
            progress.starting(t, resume)
        elif self.opts.progress:
            print(f"[{self.spec.name}] trial {trial.number} {t.name}" + (" (resuming)" if resume else ""), flush=True)
        tags = {"sweep": self.spec.name, "variant": t.label, "trial_key": folder, "trial_id": t.id, "point": t.point,
                "seed": str(cfg.seed), "result_hash": trial.user_attrs["result_hash"],
                "params": json.dumps(t.params, sort_keys=True, default=str),
                "phase": trial.user_attrs.get("phase", "grid"), "optuna_trial": str(trial.number),
                "report": self.spec.report}
        try:
            with Heartbeat(self._beater(trial._trial_id), self.beat_every):
                if self.opts.gpus_per_trial > 1:
                    test, selected, run_id = self._run_torchrun(cfg, run_dir, resume, t.label, tags)
                else:
                    result, run_id = train_experiment(
                        cfg, run_dir, resume=resume, tracking_uri=self.tracking_uri, experiment=self.spec.name,
                        parent_run_id=self.parent_run_id, run_name=t.name, extra_tags=tags,
                        progress=self.opts.progress, epoch_callback=report, description=self.row_description(t))
                    test, selected = result.test, result.selected
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
            print(f"[{self.spec.name}] trial {trial.number} {t.name} FAILED: {type(e).__name__}: {e}",
                  file=sys.stderr, flush=True)
            return "FAIL"
        trial.set_user_attr("mlflow_run_id", run_id or "")
        trial.set_user_attr("finished", time.time())
        val = selected.get(f"val/{metric}")
        trial.set_user_attr("test_score", test.get(metric))
        if val is not None:
            trial.set_user_attr("val_score", val)
        # a grid runs every point (nothing is chosen); a search chooses, so it is told validation scores only
        told = test.get(metric) if self.spec.method == "grid" else val
        self.study.tell(trial, told if told is not None else float("nan"))
        return "COMPLETE"

    @property
    def beat_every(self) -> float:
        """Seconds between a running trial's heartbeats: well inside ``stale_after``."""
        return max(0.5, min(30.0, self.opts.stale_after / 5))

    def _beater(self, trial_id: int):
        """The heartbeat of one trial, written through a storage object of its own (its own thread)."""
        import optuna

        storage = optuna.storages.get_storage(storage_for(self.spec, self.opts))

        def beat() -> None:
            storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
        return beat

    def _run_torchrun(self, cfg, run_dir: Path, resume: bool, label: str, tags: dict) -> tuple[dict, dict, str]:
        """One trial on ``gpus_per_trial`` processes (DDP through torchrun); pruning is not available."""
        from lvas.config import to_yaml
        from lvas.engine.checkpoint import load_checkpoint

        run_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = run_dir / "trial_config.yaml"
        cfg_path.write_text(to_yaml(cfg))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={self.opts.gpus_per_trial}", "-m", "lvas.cli", "train", str(cfg_path),
               "--run-dir", str(run_dir), "--experiment-name", self.spec.name,
               "--parent-run-id", self.parent_run_id, "--run-name", label, "--tags", json.dumps(tags)]
        if resume:
            cmd.append("--resume")
        if not self.opts.progress:
            cmd.append("--quiet")
        # the tracking URI travels in the environment, not on a command line that `ps` shows
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, MLFLOW_TRACKING_URI=self.tracking_uri))
        if proc.returncode != 0:
            raise RuntimeError(f"torchrun exited with {proc.returncode}: {redact((proc.stderr or proc.stdout)[-1500:])}")
        test = json.loads((run_dir / "test_metrics.json").read_text())
        selected = load_checkpoint(run_dir / "model.pt").get("selected", {})
        return test, selected, (run_dir / "mlflow_run_id").read_text().strip()

    @staticmethod
    def _set_run(trial, run_dir: Path) -> None:
        f = run_dir / "mlflow_run_id"
        if f.is_file():
            trial.set_user_attr("mlflow_run_id", f.read_text().strip())

    def _searched(self) -> int:
        """Search trials that count towards ``run_cap`` (current config, not interrupted / retired)."""
        from optuna.trial import TrialState

        return len([t for t in self.study.get_trials(deepcopy=False)
                    if t.user_attrs.get("phase", "search") == "search" and not t.user_attrs.get("interrupted")
                    and not t.user_attrs.get("superseded") and not t.user_attrs.get("duplicate")
                    and (t.state == TrialState.RUNNING or "id" not in t.user_attrs or self.is_current(t))])

    def work(self, progress=None) -> None:
        """Claim and run trials until none is left (grid) or the run cap is reached; then add the
        seeds an adaptive plan or a top-k re-run asks for, and go on while there are any."""
        while True:
            trial = self.claim()
            if trial is None and self.spec.method != "grid" and self._searched() < (self.spec.run_cap or 0):
                trial = self.study.ask()
            if trial is None:
                if self.extend(wait=True):
                    continue
                return
            self.run_one(trial, progress)

    # ------------------------------------------------------------------ seeds
    def scores(self) -> dict[str, dict]:
        """Per point with finished current trials: ``scores`` ``{seed: score}`` and the ``split`` they
        are on — the sweep metric on validation when every such trial has one, else on test (the
        grid's only one)."""
        from optuna.trial import TrialState

        rows: dict[str, dict] = {}
        for t in self.latest_by_id().values():
            if t.state != TrialState.COMPLETE or not self.is_current(t):
                continue
            r = rows.setdefault(t.user_attrs["point"], {"val": {}, "test": {}})
            for split in ("val", "test"):
                v = t.user_attrs.get(f"{split}_score")
                if v is not None:
                    r[split][t.user_attrs.get("seed")] = v
        for r in rows.values():
            r["split"] = "val" if r["val"] and len(r["val"]) == len(r["test"]) else "test"
            r["scores"] = r[r["split"]]
        return rows

    def _active(self) -> list:
        from optuna.trial import TrialState

        return [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
                if not t.user_attrs.get("superseded")]

    def extend(self, wait: bool = False) -> bool:
        """Add trials the seed plan asks for once the running ones are done; True if any was added.

        * Adaptive seeds: every row the report's test over seeds (:func:`lvas.report.stats.compare`, at
          α / looks) does not separate from the baseline row gets its next seed, and so does the
          baseline, up to ``max``.
        * ``top_k`` (random / bayes): once ``run_cap`` points are searched, the k best by the
          validation score get every other seed.
        """
        if not (self.spec.seeds.adaptive or self.spec.top_k):
            return False
        while wait and [t for t in self._active() if t.state.name == "RUNNING"]:
            time.sleep(2.0)
            self.recover()
            if self.claimable():
                return True
        if self._active():
            return bool(self.claimable())
        plan = self.adaptive_additions() if self.spec.seeds.adaptive else self.top_k_additions()
        for t, phase in plan:
            self._enqueue(t, 0, phase)
        return bool(plan)

    def claimable(self) -> bool:
        return any(t.state.name == "WAITING" for t in self._active())

    def adaptive_additions(self) -> list[tuple[Trial, str]]:
        """The next seed of every row the report's test does not yet separate from the baseline (and the
        baseline's), see :meth:`extend`."""
        from lvas.report.stats import ALPHA, compare

        rows = self.scores()
        existing = {t.user_attrs.get("id") for t in self.latest_by_id().values()}
        plan = self.spec.seeds
        out = []
        for label, params in self.spec.points():
            if label == self.spec.baseline:
                continue
            base = rows.get(self.spec.trial_for(self.spec.baseline, params).point)
            row = rows.get(self.spec.trial_for(label, params).point)
            if base is None or row is None:
                continue
            c = compare(row["scores"], base["scores"], ALPHA / plan.looks)
            if c is None or c.significant:
                continue  # separated (or not yet two seeds)
            for lab in (label, self.spec.baseline):
                nxt = next((s for s in plan.values if self.spec.trial_for(lab, params, s).id not in existing), None)
                if nxt is not None:
                    t = self.spec.trial_for(lab, params, nxt)
                    if t.id not in {x.id for x, _ in out}:
                        out.append((t, "adaptive"))
        return out

    def top_k_additions(self) -> list[tuple[Trial, str]]:
        """Every other seed for the ``top_k`` best searched points (validation score), once."""
        from optuna.trial import TrialState

        if self._searched() < (self.spec.run_cap or 0):
            return []
        best: dict[str, Any] = {}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get("phase") != "search" or not self.is_current(t) or t.value is None or t.value != t.value:
                continue
            p = t.user_attrs["point"]
            better = p not in best or (t.value > best[p].value if self.spec.goal == "maximize" else t.value < best[p].value)
            if better:
                best[p] = t
        ranked = sorted(best.values(), key=lambda t: t.value, reverse=self.spec.goal == "maximize")[: self.spec.top_k]
        existing = {t.user_attrs.get("id") for t in self.latest_by_id().values()}
        out = []
        for t in ranked:
            params = json.loads(t.user_attrs.get("params") or "{}")
            for s in self.spec.seeds.values[1:]:
                trial = self.spec.trial_for(t.user_attrs["label"], params, s)
                if trial.id not in existing:
                    out.append((trial, "top_k"))
        return out

    # ------------------------------------------------------------------ end
    def own_parent(self) -> None:
        """This coordinator runs the sweep now: its MLflow parent run is RUNNING and names this process
        (so that, if it is killed, the next store opened on this host ends the run)."""
        from mlflow import MlflowClient

        from lvas.tracking import END_TAG, owner_tags, quiet_mlflow

        with quiet_mlflow():
            client = MlflowClient(self.tracking_uri)
            client.update_run(self.parent_run_id, status="RUNNING")
            for k, v in owner_tags().items():
                client.set_tag(self.parent_run_id, k, v)
            with contextlib.suppress(Exception):  # no such tag
                client.delete_tag(self.parent_run_id, END_TAG)

    def finish(self, status: str | None = None, reason: str = "") -> bool:
        """Close the MLflow parent run when no trial is waiting or running (FINISHED, or FAILED when one
        failed; ``status`` forces one, e.g. KILLED on Ctrl-C). While other processes still work on the
        sweep it stays RUNNING and is left to them. True if no trial failed."""
        from mlflow import MlflowClient
        from optuna.trial import TrialState

        from lvas.tracking import END_TAG, PID_TAG, quiet_mlflow

        latest = self.latest_by_id()
        failed = [t for t in latest.values() if t.state == TrialState.FAIL and not t.user_attrs.get("interrupted")]
        live = [t for t in self._active() if t.state == TrialState.RUNNING and not self._dead(t)]
        with quiet_mlflow():
            client = MlflowClient(self.tracking_uri)
            if status is not None and not live:
                if reason:
                    client.set_tag(self.parent_run_id, END_TAG, reason[:5000])
                client.set_terminated(self.parent_run_id, status)
            elif not self._active():
                client.set_terminated(self.parent_run_id, "FAILED" if failed else "FINISHED")
            else:  # others are still at work: they close it
                with contextlib.suppress(Exception):
                    client.delete_tag(self.parent_run_id, PID_TAG)
        return not failed

    def summary(self):
        """One row per trial: label, parameters, seed, state, metric, trial number, MLflow run."""
        import pandas as pd

        rows = []
        for tid, t in sorted(self.latest_by_id().items(), key=lambda kv: kv[1].number):
            if not self.is_current(t):
                continue
            rows.append({"trial": t.number, "variant": t.user_attrs.get("label"),
                         "params": t.user_attrs.get("params") if t.user_attrs.get("params") not in (None, "{}") else "",
                         "seed": t.user_attrs.get("seed"), "state": t.state.name,
                         self.spec.metric: t.value if t.value is not None else float("nan"),
                         "mlflow_run": t.user_attrs.get("mlflow_run_id", ""), "key": tid})
        return pd.DataFrame(rows)


class Progress:
    """Live progress of a sweep: trials done / total, what is running, elapsed time and an ETA.

    The ETA adds, for every trial not yet finished, the mean wall time of the finished trials of
    the same variant (of all finished trials when none of its variant has finished; minus what a
    running one has already spent), and divides by the trials running side by side. Printed as one
    line per change (and every ``every`` seconds), also under ``--quiet``.
    """

    def __init__(self, runner: SweepRunner, parallel: int = 1, every: float = 20.0) -> None:
        self.runner, self.parallel, self.every = runner, max(1, parallel), every
        self.t0 = time.time()
        self.last_line, self.last_time = "", 0.0

    def counts(self) -> dict[str, Any]:
        from optuna.trial import TrialState

        done = running = waiting = 0
        durations: dict[str, list[float]] = {}
        left: list[tuple[str, float]] = []  # (label, seconds already spent) of every unfinished trial
        now_running = []
        for t in self.runner.latest_by_id().values():
            if not self.runner.is_current(t):
                continue
            a = t.user_attrs
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
                done += 1
                if a.get("started") and a.get("finished") and a["started"] >= self.t0:
                    durations.setdefault(a.get("label"), []).append(a["finished"] - a["started"])
            elif t.state == TrialState.RUNNING:
                running += 1
                left.append((a.get("label"), time.time() - a.get("started", time.time())))
                ep = t.user_attrs.get("epoch")
                seed = t.user_attrs.get("seed")
                now_running.append(f"{t.user_attrs.get('label')}" + (f" seed {seed}" if seed is not None else "")
                                   + (f" epoch {ep}" if ep else ""))
            elif t.state == TrialState.WAITING:
                waiting += 1
                left.append((a.get("label"), 0.0))
        eta = None
        if durations:
            overall = [d for ds in durations.values() for d in ds]
            fallback = sum(overall) / len(overall)
            mean = {k: sum(v) / len(v) for k, v in durations.items()}
            eta = sum(max(0.0, mean.get(lab, fallback) - spent) for lab, spent in left) / self.parallel
        return {"done": done, "running": running, "waiting": waiting, "eta": eta, "now": now_running}

    def line(self) -> str:
        c = self.counts()
        total = c["done"] + c["running"] + c["waiting"]
        elapsed = time.time() - self.t0
        left = c["running"] + c["waiting"]
        if c["eta"] is not None and left:
            eta = f"ETA {_clock(c['eta'])}"
        else:
            eta = "ETA after the first trial" if left else "done"
        adaptive = " (adaptive: more may follow)" if self.runner.spec.seeds.adaptive or self.runner.spec.top_k else ""
        now = f" · running: {', '.join(c['now'])}" if c["now"] else ""
        return (f"[{self.runner.spec.name}] {c['done']}/{total} trials done{adaptive} · {_clock(elapsed)} elapsed · "
                f"{eta}{now}")

    def tick(self, force: bool = False) -> None:
        line = self.line()
        core = line.split(" · ")[0]
        if force or core != self.last_line.split(" · ")[0] or time.time() - self.last_time >= self.every:
            print(line, flush=True)
            self.last_line, self.last_time = line, time.time()

    def starting(self, t: Trial, resume: bool) -> None:
        self.tick(force=True)
        if self.runner.opts.progress:
            print(f"[{self.runner.spec.name}] starting {t.name}" + (" (resuming)" if resume else ""), flush=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def _plain(v: Any) -> Any:
    """Optuna categorical choices must be None/bool/int/float/str: lists become their JSON."""
    return v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v)


def dry_run_table(spec: SweepSpec):
    import pandas as pd

    if spec.method == "grid":
        rows = [{"#": i, "variant": t.label, "params": json.dumps(t.params) if t.params else "",
                 "seed": t.seed if t.seed is not None else "", "overrides": " ".join(t.override_list()),
                 "key": spec.folder(t)} for i, t in enumerate(spec.grid())]
        return pd.DataFrame(rows)
    rows = [{"parameter": "variant", "space": ", ".join(spec.labels())}]
    for p in spec.parameters:
        space = ", ".join(map(str, p.values)) if p.is_discrete else f"{p.distribution}[{p.min}, {p.max}]" + (
            f" q={p.q}" if p.q else "")
        rows.append({"parameter": p.name, "space": space})
    if spec.top_k:
        rows.append({"parameter": "seeds", "space": f"{spec.seeds.values[0]} while searching; the top {spec.top_k} "
                     f"points by validation {spec.metric} then with {', '.join(map(str, spec.seeds.values[1:]))}"})
    return pd.DataFrame(rows)


def run_sweep(spec: SweepSpec, opts: SweepOptions, workers: int = 1) -> int:
    """The ``lvas sweep`` command: initialise, run (in this process or ``workers`` children), summarise.

    A worker that dies (killed, out of memory) is replaced while trials are left, at most ``3 x workers``
    times; its trial is recovered (re-enqueued and resumed from its last checkpoint). Returns the exit
    status: 0 when no trial failed, 1 otherwise.
    """
    runner = SweepRunner(spec, opts)
    runner.open_study()
    runner.own_parent()
    try:
        rec = runner.recover()
        if rec["interrupted"] or rec["retried"]:
            print(f"[{spec.name}] re-enqueued {rec['interrupted']} interrupted and {rec['retried']} failed trial(s)")
        progress = Progress(runner, parallel=workers)
        if workers <= 1:
            if opts.gpus:
                os.environ["CUDA_VISIBLE_DEVICES"] = opts.gpus[0]
            runner.work(progress)
        else:
            _run_workers(runner, opts, workers, progress)
        progress.tick(force=True)
    except KeyboardInterrupt:
        runner.finish("KILLED", "interrupted (Ctrl-C); rerun the same command to resume")
        raise
    except BaseException as e:
        runner.finish("FAILED", redact(f"{type(e).__name__}: {e}"))
        raise
    ok = runner.finish()
    table = runner.summary()
    print(table.drop(columns=["key"]).to_markdown(index=False))
    try:  # the parent run's first screen: per-row means, the row table, the winner
        from lvas.report.parent import summarise_to_parent

        done = summarise_to_parent(spec, runner.tracking_uri)
        if done is not None:
            print(done["headline"].replace("**", ""))
    except Exception as e:  # noqa: BLE001 - the trials are recorded; a summary that fails must not hide that
        print(f"[{spec.name}] could not summarise into the parent run ({type(e).__name__}: {redact(str(e))[:300]}); "
              f"`lvas report` retries", file=sys.stderr)
    return 0 if ok else 1


def _worker_env(runner: SweepRunner, opts: SweepOptions, workers: int, i: int) -> dict[str, str]:
    """A worker's environment: the storage URL and tracking URI travel here, never on its command
    line (which ``ps`` shows to every user of the machine)."""
    env = dict(os.environ, LVAS_PARALLEL_TRIALS=str(workers if not opts.gpus else 1),
               MLFLOW_TRACKING_URI=runner.tracking_uri)
    if opts.storage:
        env[STORAGE_ENV] = opts.storage
    env[OVERRIDES_ENV] = json.dumps(list(runner.spec.cli_overrides))
    if opts.gpus:
        env["CUDA_VISIBLE_DEVICES"] = opts.gpus[i % len(opts.gpus)]
    return env


def _run_workers(runner: SweepRunner, opts: SweepOptions, workers: int, progress: Progress) -> None:
    spec = runner.spec
    cmd = [sys.executable, "-m", "lvas.cli", "sweep", str(spec.path), "--worker", "--out", opts.out,
           "--stale-after", str(opts.stale_after)] + (["--quiet"] if not opts.progress else [])
    procs = [subprocess.Popen(cmd, env=_worker_env(runner, opts, workers, i)) for i in range(workers)]
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
                    procs[i] = subprocess.Popen(cmd, env=_worker_env(runner, opts, workers, i))
                    respawns -= 1
    codes = [p.wait() for p in procs]
    if any(codes):
        print(f"[{spec.name}] worker exit codes: {codes}", file=sys.stderr)
    runner.recover()
    if runner.claimable():  # the last worker died with trials left: finish them here
        runner.work(progress)


def run_worker(spec: SweepSpec, opts: SweepOptions) -> int:
    runner = SweepRunner(spec, opts)
    runner.open_study(sync=False)
    runner.work()
    return 0
