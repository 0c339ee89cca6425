"""A sweep's MLflow parent run: created with its study, owned by the coordinator while it runs, closed
when no trial is left (FINISHED, FAILED when one failed, KILLED on an interruption)."""

from __future__ import annotations

import contextlib

from lvas.config import redact
from lvas.sweepspec import SWEEP_FILE_TAG


def create(spec, tracking_uri: str) -> str:
    """The parent run of a new study: the sweep's experiment (described), tags, the sweep file."""
    from mlflow import MlflowClient

    from lvas.tracking import NOTE_TAG, describe_experiment, quiet_mlflow, share_runs_view

    with quiet_mlflow():
        client = MlflowClient(tracking_uri)
        exp = client.get_experiment_by_name(spec.name)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(spec.name)
        describe_experiment(client, exp_id, spec.description or f"lvas sweep {spec.path.name}")
        share_runs_view(client, exp_id, view_metrics(spec.metric))
        run = client.create_run(exp_id, run_name=spec.name,
                                tags={"sweep": spec.name, "report": spec.report, "method": spec.method,
                                      "lvas_role": "sweep", NOTE_TAG: redact(spec.description or ""),
                                      SWEEP_FILE_TAG: str(spec.path.resolve())})
        run_id = run.info.run_id
        client.log_text(run_id, redact(spec.path.read_text()), "sweep.yaml")
        for k, v in {"sweep.method": spec.method, "sweep.metric": spec.metric, "sweep.base": str(spec.base),
                     "sweep.report": spec.report}.items():
            client.log_param(run_id, k, v)
        if spec.cli_overrides:
            client.log_param(run_id, "sweep.command_line_overrides", redact(" ".join(spec.cli_overrides))[:6000])
    return run_id


def view_metrics(metric: str) -> tuple[str, ...]:
    """The metric columns of the sweep's shared MLflow view: the headline metrics every run logs under
    their own name, and the sweep's metric (``test/<key>`` when it is not one of them)."""
    from lvas import catalogue

    head = ("AP", "oIoU", "mIoU") if metric not in ("J", "F", "JF") else ("JF", "J", "F")
    if metric in head:
        return (metric, *[m for m in head if m != metric])
    key = catalogue.METRICS[metric].key if metric in catalogue.METRICS else metric
    return (f"test/{key}", *head)


def ui_link(spec, tracking_uri: str) -> str | None:
    """The MLflow UI link of the sweep's experiment (runs grouped by row), None if it has none yet."""
    from mlflow import MlflowClient

    from lvas.tracking import quiet_mlflow, share_runs_view, ui_url

    with quiet_mlflow():
        client = MlflowClient(tracking_uri)
        exp = client.get_experiment_by_name(spec.name)
        if exp is None:
            return None
        share_runs_view(client, exp.experiment_id, view_metrics(spec.metric))  # a sweep begun before lvas shared it
    return ui_url(tracking_uri, exp.experiment_id)


def own(tracking_uri: str, run_id: str) -> None:
    """This coordinator runs the sweep now: the parent run is RUNNING and names this process (so that,
    if it is killed, the next store opened on this host ends the run)."""
    from mlflow import MlflowClient

    from lvas.tracking import END_TAG, owner_tags, patiently, quiet_mlflow

    with quiet_mlflow():
        client = MlflowClient(tracking_uri)
        client.update_run(run_id, status="RUNNING")
        for k, v in owner_tags().items():  # every machine's coordinator tags the one parent run
            patiently(client.set_tag, run_id, k, v)
        with contextlib.suppress(Exception):  # no such tag
            client.delete_tag(run_id, END_TAG)


def close(tracking_uri: str, run_id: str, *, failed: bool, live: bool, active: bool, status: str | None = None,
          reason: str = "") -> None:
    """End the parent run: with ``status`` (forced, e.g. KILLED) unless trials still run elsewhere; else
    FINISHED / FAILED once nothing is ``active``; while others still work it stays RUNNING for them."""
    from mlflow import MlflowClient

    from lvas.tracking import END_TAG, PID_TAG, quiet_mlflow

    with quiet_mlflow():
        client = MlflowClient(tracking_uri)
        if status is not None and not live:
            if reason:
                client.set_tag(run_id, END_TAG, reason[:5000])
            client.set_terminated(run_id, status)
        elif not active:
            client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
        else:  # others are still at work: they close it
            with contextlib.suppress(Exception):
                client.delete_tag(run_id, PID_TAG)

