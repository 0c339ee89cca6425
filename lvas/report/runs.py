"""Reading a sweep's tracked runs back from MLflow (the only input of the report builder)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from lvas.sweep.spec import SweepSpec
from lvas.tracking import metric_key

METRICS8 = ("P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9", "AP", "oIoU", "mIoU")


@dataclass
class SweepRuns:
    """The runs of one sweep: ``rows`` maps each variant label to its chosen run (or None)."""

    spec: SweepSpec
    runs: pd.DataFrame  # every child run
    parent_run_id: str | None
    rows: dict[str, dict | None] = field(default_factory=dict)

    def chosen(self) -> dict[str, dict]:
        """Variants with a finished run (label -> row)."""
        return {k: r for k, r in self.rows.items() if r is not None and "metrics" in r}


def _metrics_of(run: pd.Series) -> dict[str, float]:
    out = {}
    for m in METRICS8:
        v = run.get(f"metrics.test/{metric_key(m)}")
        out[m] = float(v) if v is not None and pd.notna(v) else float("nan")
    for kind in ("appearance", "motion"):
        for m in ("AP", "oIoU", "mIoU"):
            v = run.get(f"metrics.test/{kind}/{m}")
            if v is not None and pd.notna(v):
                out[f"{kind}/{m}"] = float(v)
    return out


def collect(spec: SweepSpec, tracking_uri: str) -> SweepRuns:
    """Child runs of ``spec`` (tag ``sweep``), and per variant its most recent FINISHED run.

    Never the best of several runs: picking the maximum over reruns or seeds would be an
    optimistic number (and, since rows carry test metrics, a selection on the test split).
    """
    import mlflow

    from lvas.tracking import quiet_mlflow

    with quiet_mlflow():
        mlflow.set_tracking_uri(tracking_uri)
        exp = mlflow.get_experiment_by_name(spec.name)
        if exp is None:
            runs = pd.DataFrame()
        else:
            runs = mlflow.search_runs(experiment_ids=[exp.experiment_id], filter_string=f"tags.sweep = '{spec.name}'",
                                      max_results=5000)
    parent = None
    if not runs.empty and "tags.lvas_role" in runs:
        parents = runs[runs["tags.lvas_role"] == "sweep"]
        if not parents.empty:
            parent = parents.sort_values("start_time").iloc[-1]["run_id"]
    children = runs[runs.get("tags.mlflow.parentRunId", pd.Series(dtype=str)).notna()] if not runs.empty else runs
    out = SweepRuns(spec, children, parent)
    key = f"metrics.test/{metric_key(spec.metric)}"
    for label in spec.labels():
        cand = children[(children["tags.variant"] == label) & (children["status"] == "FINISHED")] \
            if not children.empty and "tags.variant" in children else pd.DataFrame()
        if cand.empty or key not in cand:
            latest = children[children["tags.variant"] == label] if not children.empty and "tags.variant" in children else cand
            out.rows[label] = None if latest.empty else {"status": latest.sort_values("start_time").iloc[-1]["status"],
                                                         "run_id": None}
            continue
        run = cand.sort_values("end_time").iloc[-1]
        out.rows[label] = {
            "status": "FINISHED", "run_id": run["run_id"], "metrics": _metrics_of(run),
            "dataset": run.get("tags.dataset"), "protocol": run.get("tags.protocol"),
            "commit": run.get("tags.git_commit"), "run_dir": run.get("tags.run_dir"),
            "mode": run.get("params.model.mode"), "cmam": run.get("params.model.cmam.stages"),
            "split": run.get("params.data.test_split"), "end_time": run.get("end_time"),
            "select": run.get("tags.select"), "selected_epoch": run.get("tags.selected_epoch"),
        }
    return out


def metric_history(run_id: str, key: str, tracking_uri: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri).get_metric_history(run_id, metric_key(key)))
