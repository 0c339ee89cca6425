"""Everything lvas says to MLflow goes through this module.

Tracking URI precedence: ``--tracking-uri`` flag > ``MLFLOW_TRACKING_URI`` > ``tracking.uri`` in
the config > ``sqlite:///mlflow.db`` in the working directory. A run ends FINISHED, or FAILED
with its traceback logged as ``traceback.txt``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from lvas.config import redact

DEFAULT_URI = "sqlite:///mlflow.db"

# Run tags naming the process that runs it (see lvas.liveness): how an orphan is recognised.
HOST_TAG, PID_TAG, START_TAG, BEAT_TAG = "lvas.host", "lvas.pid", "lvas.start", "lvas.heartbeat"
END_TAG = "lvas.end_reason"  # why lvas ended a run it found orphaned (or a sweep's parent run)
BEAT_EVERY = 60.0  # seconds between a run's heartbeats
ORPHAN_AFTER = 900.0  # a run of another host with no heartbeat for this long is ended as an orphan


# MLflow 3's UI opens an experiment in its GenAI view (traces, judges) unless told it holds model
# training; ``mlflow.note.content`` is what the UI shows as an experiment's or a run's description.
KIND_TAG, KIND_TRAINING = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"

_OPENED: set[str] = set()


def describe_experiment(client, experiment_id: str, description: str = "") -> None:
    """Mark an experiment as model training (the UI opens on its runs) and give it ``description``
    unless it already has one (a description edited in the UI is kept)."""
    tags = client.get_experiment(experiment_id).tags
    if tags.get(KIND_TAG) != KIND_TRAINING:
        client.set_experiment_tag(experiment_id, KIND_TAG, KIND_TRAINING)
    if description and not tags.get(NOTE_TAG):
        client.set_experiment_tag(experiment_id, NOTE_TAG, redact(description))


def file_description(path: str | Path) -> str:
    """An experiment YAML's description: its ``description:`` key, else its leading ``#`` comment block."""
    import yaml

    text = Path(path).read_text()
    with contextlib.suppress(Exception):
        data = yaml.safe_load(text)
        if isinstance(data, dict) and isinstance(data.get("description"), str):
            return data["description"].strip()
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return " ".join(x for x in lines if x).strip()


def dataset_digest(index, name: str, split: str, root: str) -> dict[str, Any]:
    """What identifies the samples a run read: name, split, root, the number of samples and a
    SHA-1 of their index (a DataFrame: video, frame, instance / expression, query) -- the same
    files give the same digest on any machine."""
    import hashlib

    return {"name": f"{name}/{split}", "root": str(root), "samples": len(index),
            "digest": hashlib.sha1(index.to_csv(index=False).encode()).hexdigest()[:12]}


def _store_path(uri: str) -> Path | None:
    """The local store of ``uri`` (SQLite file or file-store folder); None for a server."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    if uri.startswith("file:") or "://" not in uri:
        return Path(uri[len("file:"):] if uri.startswith("file:") else uri)
    return None


def _store_lock(uri: str) -> Path | None:
    """The lock file guarding a local store's creation (SQLite file or file-store folder)."""
    store = _store_path(uri)
    if store is None:
        return None
    return store.with_name(store.name + ".lock") if uri.startswith("sqlite:///") else store.parent / f".{store.name}.lock"


def open_store(uri: str, orphans: bool = True, create: bool = True) -> None:
    """Make the tracking store at ``uri`` ready for this process (once per process and URI).

    * A local store is created (and MLflow's schema migrated) under a file lock, so processes
      started together never race inside the migration.
    * Runs whose process is gone (:mod:`lvas.liveness`: a dead pid on this host, or no heartbeat
      for :data:`ORPHAN_AFTER` seconds from another host) are ended KILLED, with the reason in the
      tag ``lvas.end_reason``.

    ``create=False`` (commands that only read: ``lvas report``, ``lvas eval RUN_ID``): a local store
    that does not exist is an error, never created.

    Raises ConfigError naming the (redacted) URI when the store cannot be opened.
    """
    if uri in _OPENED:
        return
    from lvas.config import ConfigError
    from lvas.liveness import file_lock

    lock = _store_lock(uri)
    if not create and lock is not None and not _store_path(uri).exists():
        raise ConfigError(f"tracking URI {redact(uri)}: no MLflow store there (this command only reads one, it never "
                          f"creates it): is it the store the sweep or training used? (--tracking-uri, "
                          f"MLFLOW_TRACKING_URI)")
    if lock is not None and not lock.parent.is_dir():
        raise ConfigError(f"tracking URI {redact(uri)}: the folder {lock.parent} does not exist")
    if lock is not None and not os.access(lock.parent, os.W_OK):
        raise ConfigError(f"tracking URI {redact(uri)}: cannot write in {lock.parent} (permission denied)")
    try:
        with quiet_mlflow(), (file_lock(lock) if lock is not None else contextlib.nullcontext()):
            from mlflow import MlflowClient

            client = MlflowClient(uri)
            client.search_experiments(max_results=1)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - sqlalchemy / mlflow / network errors: one line for the user
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"tracking URI {redact(uri)}: cannot open the MLflow store ({redact(first)[:300]})") from None
    _OPENED.add(uri)
    if orphans:
        end_orphans(uri)


def end_orphans(uri: str, now: float | None = None) -> list[str]:
    """End (KILLED) every RUNNING run of the store whose process is gone; returns their run ids."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from lvas.liveness import HOST, is_dead

    client = MlflowClient(uri)
    ended = []
    with quiet_mlflow():
        exp_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
        for i in range(0, len(exp_ids), 100):
            token = None
            while True:
                page = client.search_runs(exp_ids[i:i + 100], "attributes.status = 'RUNNING'",
                                          max_results=1000, page_token=token)
                for run in page:
                    t = run.data.tags
                    if PID_TAG not in t:
                        continue  # not started by lvas: not ours to judge
                    if not is_dead(t.get(HOST_TAG), t.get(PID_TAG), t.get(START_TAG), t.get(BEAT_TAG),
                                   ORPHAN_AFTER, now):
                        continue
                    why = (f"process {t.get(PID_TAG)} on {t.get(HOST_TAG)} is gone" if t.get(HOST_TAG) == HOST
                           else f"no heartbeat from {t.get(HOST_TAG)} since {t.get(BEAT_TAG)}")
                    with contextlib.suppress(Exception):
                        client.set_tag(run.info.run_id, END_TAG, f"{why} (ended when a store was opened)")
                        client.set_terminated(run.info.run_id, "KILLED")
                        ended.append(run.info.run_id)
                token = page.token
                if not token:
                    break
    return ended


def resolve_uri(flag: str | None = None, config_uri: str | None = None) -> str:
    """The tracking URI to use; a relative SQLite path is made absolute (from the working directory)
    so that every process of a sweep, whatever its own directory, writes to the same file."""
    uri = flag or os.environ.get("MLFLOW_TRACKING_URI") or config_uri or DEFAULT_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str(Path.cwd() / uri[len(prefix):])
    return uri


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git_dirty() -> str:
    """``true`` when lvas/ has uncommitted changes (the commit alone does not say what ran),
    ``false`` when clean, ``unknown`` outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", str(here)], capture_output=True, text=True,
                             check=True, cwd=here, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return "true" if out.strip() else "false"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"cmam": {"stages": [5]}}}`` -> ``{"model.cmam.stages": "[5]"}`` (MLflow params)."""
    from lvas.config import flatten_dict

    return {k: v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
            for k, v in flatten_dict(d, prefix).items()}


def metric_key(name: str) -> str:
    """MLflow metric names allow ``/`` and ``.``, not ``@``: ``P@0.5`` -> ``P_at_0.5``."""
    return name.replace("@", "_at_")


class Tracker:
    """One MLflow run (a context manager); ``active`` is False for a tracker that logs nothing."""

    def __init__(self, uri: str, experiment: str, run_name: str | None = None, run_id: str | None = None,
                 parent_run_id: str | None = None, tags: dict[str, str] | None = None,
                 system_metrics: bool = False, active: bool = True, experiment_description: str = "") -> None:
        self.uri, self.experiment, self.run_name = uri, experiment, run_name
        self.experiment_description = experiment_description
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.tags = tags or {}
        self.system_metrics = system_metrics
        self.active = active

    def __enter__(self) -> "Tracker":
        if not self.active:
            return self
        import mlflow

        from lvas.liveness import Heartbeat

        open_store(self.uri)
        self._saved_env = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri)  # also exports MLFLOW_TRACKING_URI; restored on exit
        exp = mlflow.set_experiment(self.experiment)
        describe_experiment(_client(self.uri), exp.experiment_id, self.experiment_description)
        # the tags that find the run again (run_dir) and judge it an orphan (process) are written with
        # the run itself: a kill right after creating it leaves nothing unrecognisable behind
        tags = {**self.tags, **owner_tags(), BEAT_TAG: f"{time.time():.0f}"}
        kw: dict[str, Any] = {}
        if self.run_id is not None:
            kw["run_id"] = self.run_id
        else:
            kw["run_name"] = self.run_name
            kw["tags"] = tags
            if self.parent_run_id:
                kw["parent_run_id"] = self.parent_run_id
        if self.system_metrics:
            try:
                import psutil  # noqa: F401

                kw["log_system_metrics"] = True
            except ImportError:
                pass
        run = mlflow.start_run(**kw)
        self.run_id = run.info.run_id
        client, run_id = _client(self.uri), self.run_id
        if "run_id" in kw:  # a run taken up again: now this process's, and no longer ended
            mlflow.set_tags(tags)
            with contextlib.suppress(Exception):
                client.delete_tag(run_id, END_TAG)
        self._beat = Heartbeat(lambda: client.set_tag(run_id, BEAT_TAG, f"{time.time():.0f}"), BEAT_EVERY)
        self._beat.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self.active:
            return False
        import mlflow

        self._beat.__exit__(None, None, None)
        try:
            self._end(mlflow, exc_type, exc, tb)
        finally:
            if self._saved_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = self._saved_env
        return False

    def _end(self, mlflow, exc_type, exc, tb) -> None:
        if exc_type is None:
            mlflow.end_run("FINISHED")
        elif exc_type is KeyboardInterrupt:
            mlflow.end_run("KILLED")
        else:
            # what a data file said stays on this machine: the stored message is the error's public
            # part (the file and the problem, lvas.errors.DataError), never an excerpt of the file
            message = f"{exc_type.__name__}: {getattr(exc, 'public', exc)}"
            text = "".join(traceback.format_tb(tb)) + message + "\n"
            with contextlib.suppress(Exception):
                mlflow.log_text(text, "traceback.txt")
                mlflow.set_tag("failure", message[:5000])
            mlflow.end_run("FAILED")

    # -- logging ------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        if self.active:
            import mlflow

            items = list(params.items())
            for i in range(0, len(items), 90):
                mlflow.log_params(dict(items[i: i + 90]))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, prefix: str = "") -> None:
        if self.active:
            import math

            import mlflow

            clean = {metric_key(prefix + k): float(v) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and not math.isnan(float(v))}
            if clean:
                mlflow.log_metrics(clean, step=step)

    def logged_steps(self, key: str, prefix: str = "") -> set[int]:
        """Steps at which this run already has metric ``prefix + key`` (empty when inactive)."""
        if not self.active or self.run_id is None:
            return set()
        from mlflow import MlflowClient

        return {m.step for m in MlflowClient(self.uri).get_metric_history(self.run_id, metric_key(prefix + key))}

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.active:
            import mlflow

            mlflow.set_tags(tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active:
            import mlflow

            mlflow.log_artifact(str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        if self.active:
            import mlflow

            mlflow.log_text(text, name)

    def log_dict(self, data: dict, name: str) -> None:
        if self.active:
            import mlflow

            mlflow.log_dict(data, name)

    def log_dataset(self, digest: dict[str, Any], context: str) -> None:
        """Record the samples the run read (:func:`dataset_digest`) as an MLflow dataset input, so
        the UI's Datasets column names them (``context``: train, validation or test)."""
        if self.active:
            import warnings

            import mlflow
            from mlflow.data.dataset_source_registry import resolve_dataset_source
            from mlflow.data.meta_dataset import MetaDataset

            with warnings.catch_warnings():  # "resolve_dataset_source is experimental"
                warnings.simplefilter("ignore")
                source = resolve_dataset_source(str(Path(digest["root"]).resolve()))
            ds = MetaDataset(source, name=digest["name"], digest=digest["digest"])
            mlflow.log_input(ds, context=context, tags={"samples": str(digest["samples"])})

    def log_image(self, image, key: str, step: int = 0) -> None:
        """An image (numpy HxWx3 uint8 or PIL) under ``key``, browsable by step in the UI."""
        if self.active:
            import mlflow

            mlflow.log_image(image, key=key, step=step)


def owner_tags() -> dict[str, str]:
    """The run tags naming this process (host, pid, start time): how :func:`end_orphans` judges a run."""
    from lvas.liveness import identity

    me = identity()
    return {HOST_TAG: me["host"], PID_TAG: me["pid"], START_TAG: me["start"]}


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def download_artifact(run_id: str, path: str, uri: str) -> Path:
    """Fetch one artifact of a run into a temporary folder."""
    open_store(uri)
    dst = tempfile.mkdtemp(prefix="lvas-")
    return Path(_client(uri).download_artifacts(run_id, path, dst))


def reusable_run(uri: str, experiment: str, run_dir: Path, id_file: Path, resume: bool) -> tuple[str | None, str | None]:
    """The MLflow run a training in ``run_dir`` continues instead of starting a new one, and the run
    it forks from (or None).

    The run named by ``id_file`` when resuming (whatever its status) or when it never finished (a
    training killed before its first checkpoint) — provided that run belongs to this folder (its
    ``run_dir`` tag): a folder copied with ``cp -r`` names the original's run, which is never written
    into; the copy continues in a new run (second value: the original's id). Without that file (killed
    between creating the run and writing it), the newest unfinished run of ``experiment`` tagged with
    this ``run_dir``. (None, ...): start a new run.
    """
    open_store(uri)
    client = _client(uri)
    here = str(run_dir.resolve())
    if id_file.is_file():
        run_id = id_file.read_text().strip()
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - the run was deleted or lives in another store
            return None, None
        owner = run.data.tags.get("run_dir")
        if owner is not None and owner != here:
            return None, run_id
        return (run_id if resume or run.info.status != "FINISHED" else None), None
    exp = client.get_experiment_by_name(experiment)
    if exp is None or "'" in here:
        return None, None
    runs = client.search_runs([exp.experiment_id], f"tags.run_dir = '{here}' and "
                              f"attributes.status != 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=1)
    return (runs[0].info.run_id if runs else None), None


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's and alembic's INFO chatter (database migrations, run links)."""
    import logging

    names = ("mlflow", "alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent")
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for n, lvl in old.items():
            logging.getLogger(n).setLevel(lvl)
