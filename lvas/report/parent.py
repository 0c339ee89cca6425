"""What a sweep's MLflow parent run shows on the UI's first screen: one summary metric per row
(``<metric>/<row>``, the mean over seeds), the row table (``mlflow.log_table``), and a description
that says which row won and by how much. Written by the sweep's coordinator when it ends."""

from __future__ import annotations

import re
from typing import Any

from lvas.report.build import alpha_of, seed_scores
from lvas.report.runs import METRICS8, SweepRuns, collect
from lvas.stats import compare
from lvas.sweepspec import SweepSpec
from lvas.tracking import NOTE_TAG, metric_key

TABLE_FILE = "summary_table.json"


def metric_safe(label: str) -> str:
    """A row label as part of an MLflow metric key (letters, digits, ``_ - . / :`` and spaces)."""
    return re.sub(r"[^\w\-. :]", "_", label)


def summary_rows(sr: SweepRuns) -> list[dict[str, Any]]:
    """One dict per row: row, seeds, the 8 metrics (mean over seeds), ``<metric> ±`` (95 % CI
    half-width of the sweep's metric), status."""
    out = []
    for name, row in sr.rows.items():
        if row is not None and "metrics" in row:
            iv = row["intervals"][sr.spec.metric]
            out.append({"row": name, "seeds": len(row["runs"]),
                        **{m: round(row["metrics"][m], 2) for m in METRICS8 if m in row["metrics"]},
                        f"{sr.spec.metric} ±": None if iv.half != iv.half else round(iv.half, 2), "status": "finished"})
        else:
            out.append({"row": name, "seeds": 0, "status": "not run" if row is None else row["status"]})
    return out


def ranked(sr: SweepRuns) -> list[tuple[str, dict]]:
    """Finished rows, best first by the sweep's metric and goal."""
    sign = 1 if sr.spec.goal == "maximize" else -1
    return sorted(sr.chosen().items(), key=lambda kv: -sign * kv[1]["metrics"][sr.spec.metric])


def headline(sr: SweepRuns) -> str:
    """``Best row: X (AP 65.8 ± 17.7 over 3 seeds), +3.3 AP over Y.`` or why there is none."""
    m, order = sr.spec.metric, ranked(sr)
    if not order:
        return "No row has finished yet."
    best, row = order[0]
    text = f"Best row: **{best}** ({m} {row['intervals'][m].text()} over {len(row['runs'])} seed(s))"
    if len(order) > 1:
        second, other = order[1]
        text += f", {row['metrics'][m] - other['metrics'][m]:+.1f} {m} over **{second}**"
        c = compare(seed_scores(row, m), seed_scores(other, m), alpha_of(sr))
        if c is None:
            text += " (fewer than two seeds: untested)"
        else:
            text += (f" (95 % CI of Δ {c.interval_text()}, p = {c.p:.3f} over {c.seeds} seeds: "
                     + ("separated" if c.significant else "**not separated**: a rerun may swap them") + ")")
    missing = [k for k in sr.rows if k not in sr.chosen()]
    return text + "." + (f" Missing: {', '.join(missing)}." if missing else "") + \
        " Means over seeds on the test split; `lvas report` gives intervals and tests over seeds."


def markdown(rows: list[dict[str, Any]], metric: str) -> str:
    head = ["row", "seeds", metric, f"{metric} ±", "mIoU", "oIoU", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join("–" if r.get(k) is None else str(r.get(k)) for k in head) + " |")
    return "\n".join(lines)


def summarise_to_parent(spec: SweepSpec, tracking_uri: str, sr: SweepRuns | None = None) -> dict[str, Any] | None:
    """Log the per-row summary to the sweep's parent run; returns what was logged (None: no parent).
    ``sr``: the sweep's runs when the caller has collected them already (``lvas report``)."""
    from mlflow import MlflowClient

    from lvas.tracking import patiently, quiet_mlflow

    sr = sr if sr is not None else collect(spec, tracking_uri)
    if sr.parent_run_id is None:
        return None
    rows = summary_rows(sr)
    head = headline(sr)
    with quiet_mlflow():
        client = MlflowClient(tracking_uri)
        client.log_table(sr.parent_run_id, data={k: [r.get(k) for r in rows] for k in _columns(rows)},
                         artifact_file=TABLE_FILE)
        for name, row in sr.chosen().items():
            for m in dict.fromkeys((spec.metric, "mIoU", "oIoU")):
                client.log_metric(sr.parent_run_id, f"{metric_key(m)}/{metric_safe(name)}", float(row["metrics"][m]))
        about = (spec.description + "\n\n") if spec.description else ""
        patiently(client.set_tag, sr.parent_run_id, NOTE_TAG, about + head + "\n\n" + markdown(rows, spec.metric))
        order = ranked(sr)
        if order:
            patiently(client.set_tag, sr.parent_run_id, "best_row", order[0][0])
    return {"rows": rows, "headline": head}


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    return list(cols)
