"""Tables of the paper built from a sweep's MLflow runs: ours beside the published figures.

Each of our rows is followed by the paper's row for the same setting (where the paper has one)
and the difference. Missing variants (not run, failed, still running) appear as marked rows.
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path

import pandas as pd

from lvas.report import paper
from lvas.report.runs import METRICS8, SweepRuns
from lvas.report.tables import write_table

SHORT = ("AP", "oIoU", "mIoU")

# report name -> (file stem, caption, published comparison rows, paper rows by label, metrics, label of
# the paper's own row when ours is named differently)
TABLES = {
    "table1": ("table1_a2d", "Table 1: A2D Sentences test", paper.TABLE1_A2D, paper.TABLE1_A2D, METRICS8,
               "CSTM (paper)"),
    "table2": ("table2_jhmdb", "Table 2: J-HMDB Sentences (trained on A2D, no finetuning)", paper.TABLE2_JHMDB,
               paper.TABLE2_JHMDB, METRICS8, "CSTM (paper)"),
    "table3a": ("table3a_components", "Table 3a: encoder components", {}, paper.TABLE3A, METRICS8, None),
    "table3b": ("table3b_fusion", "Table 3b: fusion (no CMAM)", {}, paper.TABLE3B_FUSION, SHORT, None),
    "table3c": ("table3c_cmam", "Table 3c: CMAM positions", {}, paper.TABLE3C_CMAM, SHORT, None),
    "table3d": ("table3d_backbones", "Table 3d: backbones", {}, paper.TABLE3D_BACKBONES, SHORT, None),
    "hparams": ("hparams", "Hyper-parameter search", {}, {}, METRICS8, None),
}
BEST = {m: "max" for m in METRICS8 + ("appearance/AP", "motion/AP", "appearance/mIoU", "motion/mIoU")}


def _row(name: str, source: str, metrics: dict | None, cols, run: str = "", status: str = "") -> dict:
    r = {"row": name, "source": source}
    for c in cols:
        r[c] = (metrics or {}).get(c, float("nan"))
    r["status"] = status
    r["run"] = run
    return r


PAPER_DATASET = {"table2": "jhmdb"}  # every other table is on A2D Sentences
KIND_COLS = ("appearance/AP", "motion/AP", "appearance/mIoU", "motion/mIoU")


def comparable(sr: SweepRuns) -> bool:
    """Whether the published figures measure the same thing as our runs (same dataset)."""
    datasets = {r.get("dataset") for r in sr.chosen().values()}
    want = PAPER_DATASET.get(sr.spec.report, "a2d")
    return not datasets or datasets == {want}


def build_table(sr: SweepRuns) -> tuple[pd.DataFrame, str, str]:
    """(table, file stem, caption) for the sweep's ``report``.

    On another dataset than the paper's (the synthetic set) the published rows are left out, and
    the per-query-kind columns (appearance / motion) are added when the runs have them.
    """
    report = sr.spec.report if sr.spec.report in TABLES else "hparams"
    stem, caption, published, paper_rows, cols, own_paper = TABLES[report]
    chosen = sr.chosen()
    if not comparable(sr):
        published, paper_rows = {}, {}
        if any("motion/AP" in r["metrics"] for r in chosen.values()):
            cols = tuple(cols) + KIND_COLS
    rows = [_row(name, "published", m, cols) for name, m in published.items()]
    for label, r in sr.rows.items():
        counterpart = paper_rows.get(own_paper or label)
        if label in chosen:
            ours = chosen[label]["metrics"]
            rows.append(_row(label, "lvas", ours, cols, run=chosen[label]["run_id"], status="FINISHED"))
        else:
            status = "missing" if r is None else f"missing ({r['status']})"
            rows.append(_row(label, "lvas", None, cols, status=status))
        if counterpart is not None and not published:
            rows.append(_row(label, "paper", counterpart, cols))
        if counterpart is not None and label in chosen:
            diff = {c: chosen[label]["metrics"].get(c, math.nan) - counterpart.get(c, math.nan) for c in cols}
            rows.append(_row(label, "Δ lvas − paper", diff, cols))
    df = pd.DataFrame(rows)
    if sr.spec.report == "hparams" or report == "hparams":
        df = df[df["source"] == "lvas"]
    return df, stem, caption


def provenance(sr: SweepRuns) -> str:
    chosen = sr.chosen()
    datasets = sorted({str(r.get("dataset")) for r in chosen.values()})
    protocols = sorted({str(r.get("protocol")) for r in chosen.values()})
    splits = sorted({str(r.get("split")) for r in chosen.values()})
    commits = sorted({str(r.get("commit"))[:10] for r in chosen.values()})
    runs = ", ".join(f"{k}: `{r['run_id']}`" for k, r in chosen.items()) or "none"
    missing = [k for k in sr.rows if k not in chosen]
    selects = sorted({f"{r.get('select')} (epoch {r.get('selected_epoch')})" if r.get("select") else "?"
                      for r in chosen.values()})
    lines = [
        f"Sweep `{sr.spec.name}` ({sr.spec.path.name}), metric {sr.spec.metric} ({sr.spec.goal}); "
        f"dataset {', '.join(datasets) or '–'}, split {', '.join(splits) or '–'}, protocol {', '.join(protocols) or '–'}.",
        f"Runs: {runs}. Parent run: `{sr.parent_run_id}`. Commit(s): {', '.join(commits) or '–'}. "
        f"Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by `lvas report`.",
        "Each of our rows (`lvas`) is the variant's most recent finished run (never the best of several); its "
        f"model is the epoch chosen by `train.select` ({', '.join(selects) or '–'}; never on the test split), "
        "scored once on the test split. `paper` is the published figure for the same setting, `Δ` the "
        "difference. Metrics in percent; AP = mean of P@0.50:0.05:0.95.",
    ]
    if missing:
        lines.append(f"**Missing rows**: {', '.join(missing)} (not run, failed or still running).")
    if not comparable(sr):
        lines.append("These runs are not on the paper's dataset, so the published figures are not shown beside "
                     "them; `appearance/*` and `motion/*` break the metrics down by query kind.")
    return "\n\n".join(lines)


def write_sweep_tables(sr: SweepRuns, out_dir: Path) -> list[Path]:
    df, stem, caption = build_table(sr)
    notes = provenance(sr)
    shown = df.copy()
    return write_table(shown, out_dir, stem, f"{caption} — {sr.spec.name}", best=BEST, notes=notes,
                       candidates=shown["source"].isin(["lvas", "paper", "published"]))
