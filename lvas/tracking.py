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
import traceback
from pathlib import Path
from typing import Any, Iterator

DEFAULT_URI = "sqlite:///mlflow.db"


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
                 system_metrics: bool = False, active: bool = True) -> None:
        self.uri, self.experiment, self.run_name = uri, experiment, run_name
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.tags = tags or {}
        self.system_metrics = system_metrics
        self.active = active

    def __enter__(self) -> "Tracker":
        if not self.active:
            return self
        import mlflow

        self._saved_env = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri)  # also exports MLFLOW_TRACKING_URI; restored on exit
        mlflow.set_experiment(self.experiment)
        kw: dict[str, Any] = {}
        if self.run_id is not None:
            kw["run_id"] = self.run_id
        else:
            kw["run_name"] = self.run_name
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
        if self.tags:
            mlflow.set_tags(self.tags)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self.active:
            return False
        import mlflow

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
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            with contextlib.suppress(Exception):
                mlflow.log_text(text, "traceback.txt")
                mlflow.set_tag("failure", f"{exc_type.__name__}: {exc}"[:5000])
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


def download_artifact(run_id: str, path: str, uri: str) -> Path:
    """Fetch one artifact of a run into a temporary folder."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    dst = tempfile.mkdtemp(prefix="lvas-")
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=dst))


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
