"""One MLflow run as a context manager (:class:`Tracker`): opened (or taken up again) with the tags
that find it again and judge it an orphan, heartbeats from a background thread, everything logged
through MLflow's fluent API, and ended FINISHED, KILLED (Ctrl-C, SIGTERM: with the reason) or FAILED
(with the traceback, whose message keeps what a data file said on this machine).

A store another process holds locked (SQLite in an exclusive transaction) is waited for: every write
is retried for up to ``LVAS_STORE_WAIT`` seconds (default 300), with one line on stderr while it
waits, before the run gives up with one line naming the store.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from pathlib import Path
from typing import Any

from lvas.errors import ConfigError, redact
from lvas.signals import reason
from lvas.tracking import (BEAT_EVERY, BEAT_TAG, END_TAG, _client, describe_experiment, keep_pending_end, metric_key,
                           open_store, owner_tags, patiently, store_errors_quiet)


def _drop_active_run(mlflow) -> None:
    """Forget the fluent API's active run without writing to the store (which refused the write)."""
    with contextlib.suppress(Exception):
        from mlflow.tracking.fluent import _active_run_stack

        _active_run_stack.get().clear()

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
        if self.parent_run_id is not None:
            try:
                patiently(_client(self.uri).get_run, self.parent_run_id)
            except ConfigError:
                raise
            except Exception:  # noqa: BLE001 - MLflow's "Run ... not found"
                raise ConfigError(f"--parent-run-id {self.parent_run_id}: no such run in the MLflow store "
                                  f"{redact(self.uri)}") from None
        self._saved_env = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri)  # also exports MLFLOW_TRACKING_URI; restored on exit
        exp = patiently(mlflow.set_experiment, self.experiment)
        patiently(describe_experiment, _client(self.uri), exp.experiment_id, self.experiment_description)
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
        run = patiently(mlflow.start_run, **kw)
        self.run_id = run.info.run_id
        client, run_id = _client(self.uri), self.run_id
        if "run_id" in kw:  # a run taken up again: now this process's, and no longer ended
            patiently(mlflow.set_tags, tags)
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
        """End the run FINISHED, KILLED or FAILED. A store that cannot take the write (its disk full,
        read-only) gets no traceback: the run's end is kept as a pending record (:mod:`lvas.tracking`)
        and written by the next lvas command that opens the store; a training that had finished then
        stops with one line, a failed one with its own error."""
        tags: dict[str, str] = {}
        text = None
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):  # Ctrl-C or SIGTERM (lvas.signals)
            status, tags = "KILLED", {END_TAG: reason(exc)}
        else:
            # what a data file said stays on this machine: the stored message is the error's public
            # part (the file and the problem, lvas.errors.DataError), never an excerpt of the file
            message = f"{exc_type.__name__}: {getattr(exc, 'public', exc)}"
            text = "".join(traceback.format_tb(tb)) + message + "\n"
            status, tags = "FAILED", {"failure": message[:5000]}
        try:
            with store_errors_quiet():
                if text is not None:
                    with contextlib.suppress(Exception):
                        patiently(mlflow.log_text, text, "traceback.txt")
                for k, v in tags.items():
                    with contextlib.suppress(Exception):
                        patiently(mlflow.set_tag, k, v)
                patiently(mlflow.end_run, status)
        except ConfigError:
            keep_pending_end(self.uri, self.run_id, status, tags)
            _drop_active_run(mlflow)
            if exc_type is None:
                raise
        except Exception as e:  # noqa: BLE001 - the store refuses the write (full disk, read-only ...)
            keep_pending_end(self.uri, self.run_id, status, tags)
            _drop_active_run(mlflow)
            if exc_type is None:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ConfigError(f"the MLflow store {redact(self.uri)} cannot be written ({redact(first)[:200]}); "
                                  f"the training is complete in its folder, and the run's end is recorded when an "
                                  f"lvas command next opens the store") from None

    # -- logging ------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        if self.active:
            import mlflow

            items = list(params.items())
            for i in range(0, len(items), 90):
                patiently(mlflow.log_params, dict(items[i: i + 90]))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, prefix: str = "") -> None:
        if self.active:
            import math

            import mlflow

            clean = {metric_key(prefix + k): float(v) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and not math.isnan(float(v))}
            if clean:
                patiently(mlflow.log_metrics, clean, step=step)

    def logged_steps(self, key: str, prefix: str = "") -> set[int]:
        """Steps at which this run already has metric ``prefix + key`` (empty when inactive)."""
        if not self.active or self.run_id is None:
            return set()
        from mlflow import MlflowClient

        history = patiently(MlflowClient(self.uri).get_metric_history, self.run_id, metric_key(prefix + key))
        return {m.step for m in history}

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.active:
            import mlflow

            patiently(mlflow.set_tags, tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active:
            import mlflow

            patiently(mlflow.log_artifact, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        if self.active:
            import mlflow

            patiently(mlflow.log_text, text, name)

    def log_dict(self, data: dict, name: str) -> None:
        if self.active:
            import mlflow

            patiently(mlflow.log_dict, data, name)

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
            patiently(mlflow.log_input, ds, context=context, tags={"samples": str(digest["samples"])})

    def log_image(self, image, key: str, step: int = 0) -> None:
        """An image (numpy HxWx3 uint8 or PIL) under ``key``, browsable by step in the UI."""
        if self.active:
            import mlflow

            patiently(mlflow.log_image, image, key=key, step=step)
