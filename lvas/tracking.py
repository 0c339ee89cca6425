"""The MLflow store: which one (``--tracking-uri`` flag > ``MLFLOW_TRACKING_URI`` > ``tracking.uri``
in the config > ``sqlite:///mlflow.db`` in the working directory), opening it (created under a lock,
never by a command that only reads), ending its orphaned runs, finding a run to take up again,
fetching an artifact, and waiting for a store another process holds locked (:func:`patiently`).
One run is :class:`lvas.tracker.Tracker`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from lvas.config import ConfigError, redact
from lvas.liveness import write_atomic

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
# MLflow 3.17's UI loads a "shared view" (columns, grouping, sort) from the experiment tag
# ``mlflow.sharedViewState.<key>`` when the URL carries ``viewStateShareKey=<key>``; with
# ``workflowType=machine_learning`` it opens on the runs. lvas writes one view per experiment: the
# runs grouped by row (tag ``variant``, each group's mean shown), the metric columns, the seed.
VIEW_KEY = "lvas"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"

_OPENED: set[str] = set()
STORE_WAIT = 300.0  # seconds a locked store is waited for (LVAS_STORE_WAIT)


def _locked(e: BaseException) -> bool:
    text = str(e).lower()
    return "database is locked" in text or "database table is locked" in text or "database schema is locked" in text


def _raced(e: BaseException) -> bool:
    """Two processes wrote the same new row at once (MLflow's tag and param upserts read, then insert:
    two coordinators tagging the shared parent run can both insert); the second write, retried, updates."""
    text = str(e).lower()
    return "integrityerror" in text or "uniqueviolation" in text or "unique constraint" in text \
        or "duplicate key" in text


def patiently(call: Callable, *args, **kwargs):
    """``call(*args, **kwargs)``, retried while the store is locked by another process, for at most
    ``LVAS_STORE_WAIT`` seconds, or (a few times) when another process inserted the same row at the
    same moment; then one ConfigError naming the cause."""
    limit = float(os.environ.get("LVAS_STORE_WAIT", STORE_WAIT))
    start, told, pause, races = time.time(), False, 0.2, 0
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - sqlalchemy wraps sqlite's OperationalError in MLflow's own
            if _raced(e) and races < 5:
                races += 1
                time.sleep(0.05 * races)
                continue
            if not _locked(e) or time.time() - start > limit:
                if _locked(e):
                    raise ConfigError(f"the MLflow store stayed locked by another process for {limit:.0f} s "
                                      f"(LVAS_STORE_WAIT); nothing recorded is lost: rerun with --resume") from None
                raise
            if not told:
                print(f"lvas: the MLflow store is locked by another process; waiting up to {limit:.0f} s",
                      file=sys.stderr, flush=True)
                told = True
            time.sleep(pause)
            pause = min(2.0, pause * 1.5)



@contextlib.contextmanager
def store_errors_quiet() -> Iterator[None]:
    """MLflow's SQL store logs a database error with its whole traceback before raising it; lvas says
    what happened in one line itself."""
    import logging

    log = logging.getLogger("mlflow.store.db.utils")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _pending_dir() -> Path:
    """Where a run's end waits while its store cannot be written: the user's lvas cache (not the
    store's own disk, which may be the full one)."""
    return Path(os.environ.get("LVAS_CACHE") or Path.home() / ".cache" / "lvas") / "pending_ends"


def keep_pending_end(uri: str, run_id: str | None, status: str, tags: dict[str, str]) -> Path | None:
    """Keep the end of run ``run_id`` (status and tags) for :func:`apply_pending_ends`; None if even
    that cannot be written (the run is then ended KILLED as an orphan, :func:`end_orphans`)."""
    if run_id is None:
        return None
    with contextlib.suppress(OSError):
        folder = _pending_dir()
        folder.mkdir(parents=True, exist_ok=True)
        record = {"uri": uri, "run_id": run_id, "status": status, "tags": tags, "at": time.time()}
        return write_atomic(folder / f"{run_id}.json", json.dumps(record))
    return None


def apply_pending_ends(uri: str) -> list[str]:
    """Record the kept ends of this store's runs that are still RUNNING (their process could not write
    them: the store's disk was full); returns their run ids."""
    folder = _pending_dir()
    if not folder.is_dir():
        return []
    done = []
    client = _client(uri)
    for f in sorted(folder.glob("*.json")):
        try:
            record = json.loads(f.read_text())
            if record.get("uri") != uri:
                continue
            run = client.get_run(record["run_id"])
            if run.info.status == "RUNNING":
                for k, v in record.get("tags", {}).items():
                    client.set_tag(record["run_id"], k, str(v))
                client.set_terminated(record["run_id"], record["status"], end_time=int(record["at"] * 1000))
                done.append(record["run_id"])
            f.unlink()
        except Exception:  # noqa: BLE001 - unreadable, another store's, or still unwritable: kept for later
            continue
    return done


def describe_experiment(client, experiment_id: str, description: str = "") -> None:
    """Mark an experiment as model training (the UI opens on its runs) and give it ``description``
    unless it already has one (a description edited in the UI is kept)."""
    tags = client.get_experiment(experiment_id).tags
    if tags.get(KIND_TAG) != KIND_TRAINING:
        client.set_experiment_tag(experiment_id, KIND_TAG, KIND_TRAINING)
    if description and not tags.get(NOTE_TAG):
        client.set_experiment_tag(experiment_id, NOTE_TAG, redact(description))


def runs_view(metrics: tuple[str, ...] = ("AP", "oIoU", "mIoU")) -> dict[str, Any]:
    """The MLflow UI state lvas shares for an experiment (see ``VIEW_TAG``)."""
    return {"selectedColumns": [f"metrics.`{m}`" for m in metrics] + ["tags.`seed`", "attributes.`Duration`"],
            "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "variant"}]},
            "groupsExpanded": {}, "orderByKey": "attributes.start_time", "orderByAsc": False}


def share_runs_view(client, experiment_id: str, metrics: tuple[str, ...] = ("AP", "oIoU", "mIoU")) -> None:
    """Write the runs view of :func:`runs_view` into the experiment (replacing lvas's earlier one)."""
    view = json.dumps(runs_view(metrics))
    if client.get_experiment(experiment_id).tags.get(VIEW_TAG) != view:
        client.set_experiment_tag(experiment_id, VIEW_TAG, view)


def ui_url(tracking_uri: str, experiment_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """The link that opens the experiment's runs in the MLflow UI, grouped by row with their metrics:
    on the tracking server itself, or on ``make ui`` (``host``) for a local store."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else host
    return f"{redact(base)}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


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
    if uri.startswith(("http://", "https://")):
        wait_for_server(uri)
    try:
        with quiet_mlflow(), (file_lock(lock) if lock is not None else contextlib.nullcontext()):
            from mlflow import MlflowClient

            patiently(lambda: MlflowClient(uri).search_experiments(max_results=1))
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - sqlalchemy / mlflow / network errors: one line for the user
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"tracking URI {redact(uri)}: cannot open the MLflow store ({redact(first)[:300]})") from None
    _OPENED.add(uri)
    if lock is not None or uri.startswith(("http://", "https://", "postgresql", "mysql")):
        with contextlib.suppress(Exception), quiet_mlflow(), store_errors_quiet():
            apply_pending_ends(uri)
    if orphans:
        end_orphans(uri)


SERVER_WAIT = 120.0  # seconds a tracking server that does not answer is waited for (LVAS_SERVER_WAIT)


def wait_for_server(uri: str) -> None:
    """An MLflow tracking server that does not answer is said at once (MLflow's own client retries
    silently for minutes), then retried every few seconds up to ``LVAS_SERVER_WAIT`` seconds; past
    that, one ConfigError. Any HTTP answer counts (a 401 or 404 is a server that is there)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    probe = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    limit = float(os.environ.get("LVAS_SERVER_WAIT", SERVER_WAIT))
    deadline, told = time.time() + limit, False
    while True:
        try:
            with urllib.request.urlopen(probe, timeout=5):
                pass
            break
        except urllib.error.HTTPError:
            break  # it answered
        except (OSError, ValueError) as e:
            why = getattr(e, "reason", None) or e
            if time.time() >= deadline:
                raise ConfigError(f"tracking URI {redact(uri)}: the server did not answer for {limit:.0f} s ({why}); "
                                  f"start it, or give another --tracking-uri (LVAS_SERVER_WAIT waits longer)") from None
            if not told:
                stamp = time.strftime("%H:%M:%S", time.localtime(deadline))
                print(f"lvas: the tracking server {redact(uri)} does not answer ({why}); retrying until {stamp} "
                      f"(LVAS_SERVER_WAIT={limit:.0f} s)", file=sys.stderr, flush=True)
                told = True
            time.sleep(min(3.0, max(0.0, deadline - time.time())))
    if told:
        print(f"lvas: the tracking server {redact(uri)} answers; going on", file=sys.stderr, flush=True)


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


def owner_tags() -> dict[str, str]:
    """The run tags naming this process (host, pid, start time): how :func:`end_orphans` judges a run."""
    from lvas.liveness import identity

    me = identity()
    return {HOST_TAG: me["host"], PID_TAG: me["pid"], START_TAG: me["start"]}


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


@contextlib.contextmanager
def downloaded(run_id: str, path: str, uri: str) -> Iterator[Path]:
    """One artifact of a run, fetched into a temporary folder that is removed afterwards (also when
    the download fails); the store must exist (it is never created here)."""
    import shutil

    open_store(uri, create=False)
    dst = tempfile.mkdtemp(prefix="lvas-")
    try:
        with quiet_mlflow():
            yield Path(_client(uri).download_artifacts(run_id, path, dst))
    finally:
        shutil.rmtree(dst, ignore_errors=True)


def reusable_run(uri: str, experiment: str, run_dir: Path, id_file: Path, resume: bool,
                 config_hash: str | None = None) -> tuple[str | None, str | None]:
    """The MLflow run a training in ``run_dir`` continues instead of starting a new one, and the run
    it forks from (or None).

    The run named by ``id_file`` when resuming (whatever its status) or when it never finished (a
    training killed before its first checkpoint) — provided that run belongs to this folder (its
    ``run_dir`` tag): a folder copied with ``cp -r`` names the original's run, which is never written
    into; the copy continues in a new run (second value: the original's id). Without that file (killed
    between creating the run and writing it), the newest unfinished run of ``experiment`` tagged with
    this ``run_dir``. (None, ...): start a new run.

    ``config_hash``: a run recorded with another config (its ``config_hash`` tag: e.g. rerun with
    ``data.skip_bad=true`` after a failure) is never continued: MLflow keeps a run's parameters, and the
    old run keeps its failure; the second value is then that run's id with the prefix ``changed:``.
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
        if _other_config(run, config_hash):
            return None, "changed:" + run_id
        return (run_id if resume or run.info.status != "FINISHED" else None), None
    exp = client.get_experiment_by_name(experiment)
    if exp is None or "'" in here:
        return None, None
    runs = client.search_runs([exp.experiment_id], f"tags.run_dir = '{here}' and "
                              f"attributes.status != 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=1)
    if runs and _other_config(runs[0], config_hash):
        return None, "changed:" + runs[0].info.run_id
    return (runs[0].info.run_id if runs else None), None


def _other_config(run, config_hash: str | None) -> bool:
    recorded = run.data.tags.get("config_hash")
    return config_hash is not None and recorded is not None and recorded != config_hash


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
