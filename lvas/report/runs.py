"""Reading a sweep's tracked runs back from MLflow (the only input of the report builder).

A row of a table is a *point* of the sweep (variant and parameters). Its runs are the FINISHED
child runs of that point whose resolved config is the one the sweep file gives it now (tag
``result_hash``), the most recent per seed; runs of an older version of the file never enter a
row. The row's value is the mean over those seeds, with a 95 % Student-t interval — never the
best seed (that would be an optimistic number and, since rows carry test metrics, a selection on
the test split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvas import catalogue
from lvas.stats import Interval, interval
from lvas.sweepspec import SweepSpec, check_owner
from lvas.tracking import metric_key

METRICS8 = ("P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9", "AP", "oIoU", "mIoU")
KINDS = ("appearance", "motion")


@dataclass
class SweepRuns:
    """The runs of one sweep. ``rows``: row name -> row (a dict, see :func:`collect`) or None
    (never run); a row without ``metrics`` is missing, its ``status`` says why."""

    spec: SweepSpec
    runs: list[dict]  # every child run of the sweep, as plain dicts
    parent_run_id: str | None
    rows: dict[str, dict | None] = field(default_factory=dict)

    def chosen(self) -> dict[str, dict]:
        """Rows with at least one finished run of the current config (name -> row)."""
        return {k: r for k, r in self.rows.items() if r is not None and "metrics" in r}


def _run_dict(run) -> dict[str, Any]:
    return {"run_id": run.info.run_id, "status": run.info.status, "start_time": run.info.start_time or 0,
            "end_time": run.info.end_time or 0, "tags": dict(run.data.tags), "metrics": dict(run.data.metrics),
            "params": dict(run.data.params)}


def all_runs(client, experiment_id: str, filter_string: str, page: int = 1000) -> list[dict]:
    """Every run matching ``filter_string``, page by page (``search_runs`` returns at most ``page``)."""
    out, token = [], None
    while True:
        res = client.search_runs([experiment_id], filter_string=filter_string, max_results=page, page_token=token)
        out += [_run_dict(r) for r in res]
        token = res.token
        if not token:
            return out


def _metrics_of(run: dict) -> dict[str, float]:
    out = {}
    for m in METRICS8:
        v = run["metrics"].get(f"test/{metric_key(m)}")
        out[m] = float(v) if v is not None else float("nan")
    for m in catalogue.METRICS.values():  # the other evaluators' (Ref-YouTube-VOS J/F/JF, a plugin's)
        if m.name not in out and f"test/{m.key}" in run["metrics"]:
            out[m.name] = float(run["metrics"][f"test/{m.key}"])
    for kind in KINDS:
        for m in ("AP", "oIoU", "mIoU"):
            v = run["metrics"].get(f"test/{kind}/{m}")
            if v is not None:
                out[f"{kind}/{m}"] = float(v)
    for key, v in run["metrics"].items():  # the same predictions under every protocol
        if key.startswith("protocol/") and key.rsplit("/", 1)[-1] in ("AP", "oIoU", "mIoU", "mAP"):
            out[key] = float(v)
    return out


SCALE_TAGS = ("dist.world_size", "dist.per_device_batch", "dist.accumulate", "dist.effective_batch", "dist.lr",
              "dist.sync_bn", "dist.devices")


def scale_text(tags: dict[str, str]) -> str:
    """How a run was spread over processes (its ``dist.*`` tags, lvas.engine.trainer.distribution_tags)."""
    if "dist.world_size" not in tags:
        return "not recorded"
    t = {k: tags.get(k, "?") for k in SCALE_TAGS}
    return (f"{t['dist.world_size']} process(es) x {t['dist.per_device_batch']} per device, "
            f"{t['dist.accumulate']} accumulation step(s), effective batch {t['dist.effective_batch']}, lr {t['dist.lr']}, "
            f"synchronised BatchNorm {t['dist.sync_bn'].lower()}, on {t['dist.devices']}")


def machine_text(tags: dict[str, str]) -> str:
    """One line naming a run's floating-point path (its ``fp.*`` tags, lvas.engine.resources.float_path)."""
    return (f"{tags.get('fp.cpu', '?')} ({tags.get('fp.cpu_capability', '?')}), {tags.get('fp.threads', '?')} "
            f"thread(s), {tags.get('fp.device', '?')}, torch {tags.get('fp.torch', '?')}, oneDNN {tags.get('fp.onednn', '?')}"
            + (f", cuDNN {tags['fp.cudnn']}" if tags.get("fp.cudnn") else ""))


def row_name(label: str, params: dict) -> str:
    return label if not params else f"{label} " + ", ".join(f"{k}={v}" for k, v in params.items())


def _points(spec: SweepSpec, children: list[dict]) -> list[tuple[str, dict]]:
    """The rows: the grid's points, or for a search its searched points (the ``top_k`` re-run
    ones when the sweep has ``top_k``), from the runs' tags."""
    if spec.method == "grid":
        return spec.points()
    seen: dict[str, tuple[str, dict]] = {}
    for r in children:
        t = r["tags"]
        if "point" in t and (not spec.top_k or t.get("phase") == "top_k"):
            seen.setdefault(t["point"], (t.get("variant", "default"), json.loads(t.get("params") or "{}")))
    return list(seen.values())


def collect(spec: SweepSpec, tracking_uri: str) -> SweepRuns:
    """The sweep's child runs and, per row, its current runs (see the module docstring)."""
    from mlflow import MlflowClient

    from lvas.tracking import open_store, quiet_mlflow

    open_store(tracking_uri, create=False)
    with quiet_mlflow():
        client = MlflowClient(tracking_uri)
        exp = client.get_experiment_by_name(spec.name)
        runs = [] if exp is None else all_runs(client, exp.experiment_id, f"tags.sweep = '{spec.name}'")
    parents = sorted((r for r in runs if r["tags"].get("lvas_role") == "sweep"), key=lambda r: r["start_time"])
    parent = parents[-1]["run_id"] if parents else None
    if parents:
        check_owner(spec, parents[-1]["tags"])
    children = [r for r in runs if "mlflow.parentRunId" in r["tags"]]
    out = SweepRuns(spec, children, parent)
    for label, params in _points(spec, children):
        out.rows[row_name(label, params)] = _row(spec, label, params, children)
    return out


def _row(spec: SweepSpec, label: str, params: dict, children: list[dict]) -> dict | None:
    expected: dict[str, Any] = {}
    for s in spec.seeds.values:
        try:
            expected[spec.result_hash(spec.trial_for(label, params, s))] = s
        except Exception:  # noqa: BLE001 - a point the file no longer resolves has no current runs
            continue
    point = spec.trial_for(label, params).point
    mine = [r for r in children if r["tags"].get("point") == point
            or (r["tags"].get("variant") == label and not params and "point" not in r["tags"])]
    current = [r for r in mine if r["tags"].get("result_hash") in expected]
    finished = [r for r in current if r["status"] == "FINISHED" and f"test/{metric_key(spec.metric)}" in r["metrics"]]
    by_seed: dict[Any, dict] = {}
    for r in sorted(finished, key=lambda r: r["end_time"]):
        by_seed[expected[r["tags"]["result_hash"]]] = r  # the most recent run of each seed
    base = {"label": label, "params": params, "point": point}
    if not by_seed:
        if not mine:
            return None
        if not current:
            return {**base, "status": "stale: the sweep file changed; rerun it with --rerun-stale", "run_id": None}
        latest = max(current, key=lambda r: r["start_time"])
        return {**base, "status": latest["status"], "run_id": None}
    seeds = sorted(by_seed, key=lambda s: (s is None, s))
    per_seed = []
    for s in seeds:
        r = by_seed[s]
        t = r["tags"]
        per_seed.append({
            "seed": t.get("seed", s), "run_id": r["run_id"], "metrics": _metrics_of(r), "run_dir": t.get("run_dir"),
            "select": t.get("select"), "selected_epoch": t.get("selected_epoch"), "best_val_epoch": t.get("best_val_epoch"),
            "commit": t.get("git_commit"), "dirty": t.get("git_dirty"), "config_hash": t.get("config_hash"),
            "dataset": t.get("dataset"), "protocol": t.get("protocol"),
            "split": r["params"].get("data.test_split"), "mode": r["params"].get("model.mode"),
            "cmam": r["params"].get("model.cmam.stages"), "end_time": r["end_time"],
            "machine": machine_text(t) if "fp.cpu" in t else "not recorded", "scale": scale_text(t)})
    names = sorted({k for p in per_seed for k in p["metrics"]})
    intervals: dict[str, Interval] = {k: interval([p["metrics"].get(k) for p in per_seed]) for k in names}
    first = per_seed[0]
    return {**base, "status": "FINISHED", "runs": per_seed, "seeds": [p["seed"] for p in per_seed],
            "metrics": {k: iv.mean for k, iv in intervals.items()}, "intervals": intervals,
            # the first seed's run stands for the row where one model is needed (curves, Fig. 4/5)
            "run_id": first["run_id"], "run_dir": first["run_dir"], "mode": first["mode"], "cmam": first["cmam"],
            "dataset": first["dataset"], "protocol": first["protocol"], "split": first["split"],
            "select": first["select"], "commits": sorted({str(p["commit"]) for p in per_seed}),
            "dirty": any(p.get("dirty") == "true" for p in per_seed),
            "config_hashes": [str(p.get("config_hash")) for p in per_seed]}


def sample_records(run: dict, tracking_uri: str) -> list[dict] | None:
    """Per-sample test records of one seed's run (``test_samples.json``), or None if it has none."""
    local = Path(run["run_dir"]) / "test_samples.json" if run.get("run_dir") else None
    try:
        if local is not None and local.is_file():
            return json.loads(local.read_text())["samples"]
        from lvas.tracking import downloaded

        with downloaded(run["run_id"], "test_samples.json", tracking_uri) as path:
            return json.loads(path.read_text())["samples"]
    except Exception:  # noqa: BLE001 - runs recorded before per-sample records existed
        return None


def metric_history(run_id: str, key: str, tracking_uri: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri).get_metric_history(run_id, metric_key(key)))
