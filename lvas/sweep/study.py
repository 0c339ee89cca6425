"""The sweep's trial state in an Optuna study, behind one adapter.

* Storage: ``--storage`` (an Optuna RDB URL such as ``postgresql://...``), default a journal file
  ``<out>/<sweep>/optuna.journal`` (safe for several processes on one machine).
* Claims: a WAITING trial becomes RUNNING through the storage's ``set_trial_state_values``, which
  succeeds for exactly one claimant, so no grid point runs twice. Owners, heartbeats and retiring a
  trial are storage writes too. Optuna has no public API for these; every use of its private parts
  (``study._storage``, ``trial._trial_id``) is in this module.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from lvas.config import ConfigError, redact
from lvas.liveness import HOST, process_start

STORAGE_ENV = "LVAS_STORAGE"  # the Optuna storage URL, for workers and for users who keep it off argv


def open_storage(url: str | None, journal: Path):
    """The Optuna storage of a sweep; one that cannot be opened raises a ConfigError naming it."""
    try:
        return _storage(url, journal)
    except ConfigError:
        raise
    except ValueError as e:  # json.JSONDecodeError: a journal line cut short (a write killed half-way)
        raise corrupt_journal(url, journal, e) from None
    except Exception as e:  # noqa: BLE001 - sqlalchemy / driver / OS errors: one line for the user
        where = redact(url) if url else str(journal)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"--storage {where}: cannot open the Optuna storage ({redact(first)[:300]})") from None


def corrupt_journal(url: str | None, journal: Path, e: Exception) -> ConfigError:
    where = redact(url) if url else str(journal)
    return ConfigError(f"{where}: the sweep's trial journal has a line that is not valid JSON ({str(e)[:60]}); if its "
                       f"last line is cut short, remove that line (a write that never finished) and rerun")


def _storage(url: str | None, journal: Path):
    import optuna

    if url:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if not url.startswith(("postgresql", "mysql")):
                return optuna.storages.RDBStorage(url)
            # Machines started together race to create the schema on a fresh database: retry.
            import sqlalchemy.exc

            for attempt in range(8):
                try:
                    return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
                except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):  # the schema race
                    if attempt == 7:
                        raise
                    time.sleep(0.5 + random.random())
    journal.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(_journal_backend(journal))


def _journal_backend(journal: Path):
    """Optuna's journal file, whose every replay names the file when a line is not valid JSON. A last
    line cut short (a process killed while appending) is dropped first: Optuna skips it when reading
    but would append the next record onto it, corrupting both."""
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    if journal.is_file() and journal.stat().st_size:
        lock = JournalFileSymlinkLock(str(journal))  # the lock Optuna's appends take
        lock.acquire()
        try:
            data = journal.read_bytes()
            if not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                with open(journal, "r+b") as f:
                    f.truncate(keep)
                print(f"lvas: {journal}: dropped an unfinished last line ({len(data) - keep} bytes of a write that "
                      f"never completed)", file=sys.stderr, flush=True)
        finally:
            lock.release()

    class Journal(JournalFileBackend):
        def read_logs(self, log_number_from: int):
            try:
                yield from super().read_logs(log_number_from)
            except ValueError as e:
                raise corrupt_journal(None, journal, e) from None

    return Journal(str(journal))


def sampler(method: str, seed: int):
    import optuna

    if method == "bayes":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def pruner(early_terminate: dict | None):
    import optuna

    et = early_terminate
    if not et:
        return optuna.pruners.NopPruner()
    if et["type"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=int(et.get("min_iter", 1)))
    return optuna.pruners.HyperbandPruner(min_resource=int(et.get("min_iter", 1)),
                                          max_resource=et.get("max_iter", "auto"),
                                          reduction_factor=int(et.get("eta", 3)))


class Study:
    """A sweep's study: create or load it, read its trials, claim / own / retire them, enqueue new ones.

    Args:
        name, direction, method, seed, early_terminate: of the sweep.
        url: Optuna storage URL (None: the journal file ``journal``).
    """

    def __init__(self, name: str, direction: str, method: str, seed: int, early_terminate: dict | None,
                 url: str | None, journal: Path, create: bool = True) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.url, self.journal = url, journal
        try:
            storage = open_storage(url, journal)
            if not create:  # only read (--status): a study that does not exist is not made
                try:
                    self.optuna = optuna.load_study(study_name=name, storage=storage)
                except KeyError:
                    raise ConfigError(f"sweep {name!r} has not started: no study of that name in "
                                      f"{redact(url) if url else journal}") from None
                self.created = False
                return
            try:
                self.optuna = optuna.create_study(study_name=name, storage=storage, direction=direction,
                                                  sampler=sampler(method, seed), pruner=pruner(early_terminate))
                self.created = True
            except optuna.exceptions.DuplicatedStudyError:
                self.optuna = optuna.load_study(study_name=name, storage=storage, sampler=sampler(method, seed),
                                                pruner=pruner(early_terminate))
                self.created = False
        except ConfigError:
            raise
        except ValueError as e:
            raise corrupt_journal(url, journal, e) from None

    @property
    def attrs(self) -> dict[str, Any]:
        return self.optuna.user_attrs

    def set_attr(self, key: str, value: Any) -> None:
        self.optuna.set_user_attr(key, value)

    def trials(self, *states) -> list:
        return self.optuna.get_trials(deepcopy=False, states=states or None)

    def latest_by_id(self) -> dict[str, Any]:
        """The newest Optuna trial of every lvas trial id (duplicates and superseded trials left out)."""
        latest: dict[str, Any] = {}
        for t in self.trials():
            tid = t.user_attrs.get("id")
            if tid is None or t.user_attrs.get("duplicate") or t.user_attrs.get("superseded"):
                continue
            if tid not in latest or t.number > latest[tid].number:
                latest[tid] = t
        return latest

    def active(self) -> list:
        from optuna.trial import TrialState

        return [t for t in self.trials(TrialState.WAITING, TrialState.RUNNING) if not t.user_attrs.get("superseded")]

    def enqueue(self, params: dict[str, Any], attrs: dict[str, Any]) -> None:
        self.optuna.enqueue_trial(params, user_attrs=attrs)

    def claim(self, keep: Callable[[Any], str | None]):
        """Atomically take one WAITING trial and name this process its owner; ``keep(frozen)`` returns a
        reason to retire it instead (``superseded``, ``duplicate``) or None. None when none is left."""
        import optuna
        from optuna.trial import TrialState

        storage = self.optuna._storage
        for t in self.trials(TrialState.WAITING):
            try:
                if not storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                    continue
            except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                continue
            self.own(t._trial_id)
            why = keep(t)
            if why:
                self.retire(t, why)
                continue
            return optuna.trial.Trial(self.optuna, t._trial_id)
        return None

    def own(self, trial_id: int) -> None:
        """Name this process as the trial's owner, in one storage write (so a kill cannot leave half an
        identity: a host without its pid would look alive forever)."""
        self.optuna._storage.set_trial_user_attr(trial_id, "owner", {"host": HOST, "pid": os.getpid(),
                                                                     "start": process_start()})

    def retire(self, frozen, why: str) -> bool:
        """Mark a WAITING/RUNNING trial FAIL, noting ``why``; False when it had already finished."""
        import optuna
        from optuna.trial import TrialState

        storage = self.optuna._storage
        try:
            storage.set_trial_user_attr(frozen._trial_id, why, True)
            storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)
            return True
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            return False

    def beater(self, trial_id: int) -> Callable[[], None]:
        """The heartbeat of one trial, written through a storage object of its own (its own thread)."""
        import optuna

        storage = optuna.storages.get_storage(open_storage(self.url, self.journal))

        def beat() -> None:
            storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
        return beat

    @staticmethod
    def trial_id(trial) -> int:
        return trial._trial_id

    def ask(self):
        return self.optuna.ask()

    def tell(self, trial, value=None, state=None) -> None:
        self.optuna.tell(trial, value, state=state)


def plain(v: Any) -> Any:
    """Optuna categorical choices must be None/bool/int/float/str: lists become their JSON."""
    return v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v)
