"""Running a sweep: trial state in an Optuna study (:mod:`lvas.sweep.study`), every trial a nested MLflow run.

* The process that creates the study initialises it once: the MLflow parent run
  (:mod:`lvas.sweep.parent`), and for grid sweeps every grid point enqueued as a WAITING trial.
  Workers claim WAITING trials atomically, so no grid point runs twice.
* Re-running the same command resumes: COMPLETE/PRUNED points are skipped; a RUNNING trial whose
  worker is gone (dead pid on this host, or no heartbeat for ``--stale-after`` seconds) is marked
  FAIL (``interrupted``) and re-enqueued, and its rerun continues from the checkpoint in its trial
  folder (``<out>/<sweep>/trials/<key>``) and the same MLflow run; FAILed points are re-enqueued
  only with ``--retry-failed``.
* A crashing trial is recorded FAIL (Optuna) / FAILED (MLflow, with traceback) and the sweep goes on.
* Every trial stores the hash of its resolved config (``result_hash``) and the config itself; a sweep
  file edited after trials ran is reconciled by :mod:`lvas.sweep.sync`.
* Seeds: every point runs once per seed; adaptive seeds and the top-k re-runs of a search are added
  when nothing is left to claim (:mod:`lvas.sweep.seeds`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvas.config import ConfigError, result_config
from lvas.liveness import clean_tmp, is_dead
from lvas.sweep import parent, seeds
from lvas.sweep.study import Study, plain
from lvas.sweep.sync import StaleSweep, sync
from lvas.sweepspec import SweepSpec, Trial

CLAIM_GRACE = 30.0  # seconds a claimed trial may go without an owner before it counts as abandoned
__all__ = ["CLAIM_GRACE", "StaleSweep", "SweepOptions", "SweepRunner", "sweep_dir"]


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


class SweepRunner:
    """One process's view of a sweep: its study, its trials' identity and state, claiming and running."""

    def __init__(self, spec: SweepSpec, opts: SweepOptions, create: bool = True) -> None:
        """``create=False`` (``--status``): only read; a sweep that never ran is an error and nothing
        (folder, store, lock) is created."""
        self.spec, self.opts = spec, opts
        self.dir = sweep_dir(spec, opts)
        if not create:
            from lvas.tracking import open_store, resolve_uri

            if not (self.dir / "optuna.journal").is_file() and not opts.storage:
                raise ConfigError(f"{spec.path}: sweep {spec.name!r} has not started: no study under {self.dir} "
                                  f"(start it with lvas sweep {spec.path}; --out if it ran elsewhere)")
            self.tracking_uri = resolve_uri(opts.tracking_uri)
            open_store(self.tracking_uri, orphans=False, create=False)
            self.study = None
            self.read_only = True
            return
        self.read_only = False
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
        self.study: Study | None = None

    # ------------------------------------------------------------------ study
    def open_study(self, sync_file: bool = True) -> Study:
        """Create (and initialise) or load the study, then (``sync_file``) bring it in line with the file."""
        spec = self.spec
        self.study = Study(spec.name, "maximize" if spec.goal == "maximize" else "minimize", spec.method, spec.seed,
                           spec.early_terminate, self.opts.storage, self.dir / "optuna.journal",
                           create=not self.read_only)
        self.study.trials()  # the whole journal read back before anything is written (a damaged line stops here)
        if self.study.created:
            self.study.set_attr("mlflow_parent_run_id", parent.create(spec, self.tracking_uri))
            self.study.set_attr("sweep_file", str(Path(spec.path).resolve()))
            self.study.set_attr("method", spec.method)
            sync(self)
            self.study.set_attr("initialised", True)
        deadline = time.time() + 120
        while "initialised" not in self.study.attrs:
            if time.time() > deadline:
                raise RuntimeError(f"study {spec.name} exists but was never initialised "
                                   f"(its creator died?): delete it from the storage and start again")
            time.sleep(0.5)
        if not self.study.created:
            self._check_owner()
        if sync_file and not self.study.created:
            sync(self)
        return self.study

    def _check_owner(self) -> None:
        """Two sweep files with one ``name:`` would share a study, a parent run and a report: the
        study belongs to the file that created it. A file that moved (its old path is gone) takes the
        study over; another file that exists is refused."""
        mine = Path(self.spec.path).resolve()
        stored = self.study.attrs.get("sweep_file")
        if not stored:
            return
        owner = Path(stored)
        if not owner.is_absolute():  # recorded relative by lvas < 0.2: only its name is known
            if owner.name != mine.name:
                raise ConfigError(self._owned_by(owner))
            return
        if owner == mine:
            return
        if owner.exists() and not (mine.exists() and owner.samefile(mine)):
            raise ConfigError(self._owned_by(owner))
        if not owner.exists() and not self.read_only:
            print(f"[{self.spec.name}] sweep file moved from {owner} to {mine}: continuing its study", flush=True)
            self.study.set_attr("sweep_file", str(mine))

    def _owned_by(self, owner: Path) -> str:
        return (f"{self.spec.path}: name: {self.spec.name!r} is the sweep of another file, {owner} (its study and "
                f"MLflow parent run are under {self.dir}); give this sweep another name:, or another --out")

    @property
    def parent_run_id(self) -> str:
        return self.study.attrs["mlflow_parent_run_id"]

    def trial_attrs(self, t: Trial, attempt: int, phase: str) -> dict[str, Any]:
        """What a stored Optuna trial carries to name its lvas trial (read back by :meth:`trial_of`)."""
        return {"id": t.id, "point": t.point, "label": t.label, "params": json.dumps(t.params, default=str),
                "seed": t.seed, "attempt": attempt, "phase": phase, "result_hash": self.spec.result_hash(t),
                "config": json.dumps(result_config(self.spec.config_for(t)), default=str)}

    def enqueue(self, t: Trial, attempt: int, phase: str) -> None:
        self.study.enqueue({"variant": t.label, **{k: plain(v) for k, v in t.params.items()}},
                           self.trial_attrs(t, attempt, phase))

    def trial_of(self, frozen) -> Trial | None:
        """The trial the current sweep file makes of a stored Optuna trial (None: not one of ours)."""
        a = frozen.user_attrs
        if "id" not in a:
            return None
        try:
            params = json.loads(a.get("params") or "{}")
        except ValueError:
            return None
        # a stored trial names a point of this sweep file: one of its rows and only its parameters
        # (a journal is data: what it says never adds a key, such as imports:, to a trial's config)
        if not isinstance(params, dict) or set(params) - {p.name for p in self.spec.parameters} \
                or a.get("label") not in self.spec.labels():
            return None
        return self.spec.trial_for(a["label"], params, a.get("seed"))

    def is_current(self, frozen) -> bool:
        """Whether ``frozen`` ran (or will run) the config the sweep file now gives it."""
        h = frozen.user_attrs.get("result_hash")
        t = self.trial_of(frozen)
        if h is None or t is None:
            return False
        try:
            return h == self.spec.result_hash(t)
        except ConfigError:
            return False

    def latest_by_id(self) -> dict[str, Any]:
        return self.study.latest_by_id()

    def dead(self, t) -> bool:
        """A RUNNING trial whose worker is gone (:func:`lvas.liveness.is_dead`): on this host its process
        no longer exists; on another host its heartbeat is older than ``stale_after``. A claimed trial
        whose worker has not written its identity yet counts as dead only after ``CLAIM_GRACE``."""
        a = t.user_attrs
        owner = a.get("owner") or ({"host": a["host"], "pid": a.get("pid"), "start": a.get("start")}
                                   if a.get("host") is not None else None)  # trials of older lvas versions
        if owner is None:  # the owner is written in the storage call right after the claim
            started = t.datetime_start.timestamp() if t.datetime_start else 0.0
            return time.time() - started > min(CLAIM_GRACE, self.opts.stale_after)
        return is_dead(owner["host"], owner["pid"], owner["start"], a.get("heartbeat"), self.opts.stale_after)

    _dead = dead  # the name earlier tests and tools use

    @staticmethod
    def owned_here(t) -> bool:
        """Whether this very process claimed the RUNNING trial ``t``."""
        from lvas.liveness import HOST, process_start

        owner = t.user_attrs.get("owner") or {}
        return owner.get("host") == HOST and str(owner.get("pid")) == str(os.getpid()) and \
            owner.get("start") in (None, process_start())

    def recover(self) -> dict[str, int]:
        """Re-enqueue interrupted trials (and failed ones with ``retry_failed``)."""
        from optuna.trial import TrialState

        counts = {"interrupted": 0, "retried": 0}
        for t in self.latest_by_id().values():
            trial = self.trial_of(t)
            if trial is None:  # not a trial of this sweep file (a record it does not define)
                continue
            if t.state == TrialState.RUNNING:
                if not self.dead(t) or not self.study.retire(t, "interrupted"):
                    continue  # alive, or another worker recovered it first
                self.enqueue(trial, int(t.user_attrs.get("attempt", 0)), t.user_attrs.get("phase", "grid"))
                counts["interrupted"] += 1
            elif t.state == TrialState.FAIL and self.opts.retry_failed and not t.user_attrs.get("interrupted"):
                self.enqueue(trial, int(t.user_attrs.get("attempt", 0)) + 1, t.user_attrs.get("phase", "grid"))
                counts["retried"] += 1
        return counts

    # ------------------------------------------------------------------ work
    def claim(self):
        """Atomically take one WAITING trial; None when there is none left. A claimed trial whose config
        the file no longer gives it is retired as superseded; one whose id already has an earlier live
        trial (two machines enqueued the same new point) as duplicate."""
        def keep(t) -> str | None:
            if "id" in t.user_attrs and not self.is_current(t):
                return "superseded"
            if "id" in t.user_attrs and self._has_earlier_twin(t):
                return "duplicate"
            return None

        return self.study.claim(keep)

    def _has_earlier_twin(self, t) -> bool:
        from optuna.trial import TrialState

        for o in self.study.trials(TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED):
            if o.number < t.number and o.user_attrs.get("id") == t.user_attrs["id"] and \
                    o.user_attrs.get("result_hash") == t.user_attrs.get("result_hash") and \
                    not o.user_attrs.get("duplicate") and not o.user_attrs.get("superseded"):
                return True
        return False

    @property
    def beat_every(self) -> float:
        """Seconds between a running trial's heartbeats: well inside ``stale_after``."""
        return max(0.5, min(30.0, self.opts.stale_after / 5))

    def _beater(self, trial_id: int):
        return self.study.beater(trial_id)

    def searched(self) -> int:
        """Search trials that count towards ``run_cap`` (current config, not interrupted / retired)."""
        from optuna.trial import TrialState

        return len([t for t in self.study.trials()
                    if t.user_attrs.get("phase", "search") == "search" and not t.user_attrs.get("interrupted")
                    and not t.user_attrs.get("superseded") and not t.user_attrs.get("duplicate")
                    and (t.state == TrialState.RUNNING or "id" not in t.user_attrs or self.is_current(t))])

    def work(self, progress=None, stop=None) -> None:
        """Claim and run trials until none is left (grid) or the run cap is reached; then add the seeds an
        adaptive plan or a top-k re-run asks for, and go on while there are any. ``stop()`` True ends
        the loop between trials (a signal asked this process to stop)."""
        from lvas.sweep.trial import run_one

        while stop is None or not stop():
            trial = self.claim()
            if trial is None and self.spec.method != "grid" and self.searched() < (self.spec.run_cap or 0):
                trial = self.study.ask()
            if trial is None:
                if self.extend(wait=True):
                    continue
                return
            run_one(self, trial, progress)

    # ------------------------------------------------------------------ seeds
    def scores(self) -> dict[str, dict]:
        return seeds.scores(self)

    def adaptive_additions(self) -> list[tuple[Trial, str]]:
        return seeds.adaptive_additions(self, self.scores())

    def extend(self, wait: bool = False) -> bool:
        """Add the trials the seed plan asks for once the running ones are done; True if any was added."""
        if not (self.spec.seeds.adaptive or self.spec.top_k):
            return False
        while wait and [t for t in self.study.active() if t.state.name == "RUNNING"]:
            time.sleep(2.0)
            self.recover()
            if self.claimable():
                return True
        if self.study.active():
            return bool(self.claimable())
        plan = self.adaptive_additions() if self.spec.seeds.adaptive else seeds.top_k_additions(self)
        for t, phase in plan:
            self.enqueue(t, 0, phase)
        return bool(plan)

    def claimable(self) -> bool:
        return any(t.state.name == "WAITING" for t in self.study.active())

    # ------------------------------------------------------------------ end
    def own_parent(self) -> None:
        parent.own(self.tracking_uri, self.parent_run_id)

    def finish(self, status: str | None = None, reason: str = "") -> bool:
        """Close the MLflow parent run when no trial is waiting or running (see :func:`parent.close`).
        True if no trial failed."""
        from optuna.trial import TrialState

        latest = self.latest_by_id()
        failed = [t for t in latest.values() if t.state == TrialState.FAIL and not t.user_attrs.get("interrupted")]
        # a forced end (this process was stopped): the trial this process itself ran is not live any more
        live = [t for t in self.study.active() if t.state == TrialState.RUNNING and not self.dead(t)
                and not (status is not None and self.owned_here(t))]
        parent.close(self.tracking_uri, self.parent_run_id, failed=bool(failed), live=bool(live),
                     active=bool(self.study.active()), status=status, reason=reason)
        return not failed


