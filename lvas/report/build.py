"""Tables of the paper built from a sweep's MLflow runs: ours beside the published figures.

Each of our rows is followed by the paper's row for the same setting (where the paper has one)
and the difference. Missing variants (not run, failed, still running) appear as marked rows.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lvas import catalogue
from lvas.errors import ConfigError
from lvas.report import paper
from lvas.report.runs import METRICS8, SweepRuns, sample_records
from lvas.report.sample_test import SAMPLE_TEST_NAME, compare_samples
from lvas.liveness import write_atomic
from lvas.stats import ALPHA, TEST_NAME, Comparison, compare, seeds_needed, signed
from lvas.report.tables import Marks, write_table

SHORT = ("AP", "oIoU", "mIoU")

# report name -> (file stem, caption, published comparison rows, paper rows by label, metrics, our row
# label -> the published row it reproduces, when named differently)
TABLES = {
    "table1": ("table1_a2d", "Table 1: A2D Sentences test", paper.TABLE1_A2D, paper.TABLE1_A2D, METRICS8 + ("mAP",),
               {"CSTM (lvas)": "CSTM (paper)", "ACGA (lvas)": "ACGA ICCV2019", "LBDT-4 (lvas)": "LBDT-4 CVPR2022",
                "ReferFormer (lvas)": "ReferFormer CVPR2022 (Video-Swin-B)"}),
    "table2": ("table2_jhmdb", "Table 2: J-HMDB Sentences (trained on A2D, no finetuning)", paper.TABLE2_JHMDB,
               paper.TABLE2_JHMDB, METRICS8 + ("mAP",),
               {"CSTM (lvas)": "CSTM (paper)", "ACGA (lvas)": "ACGA", "LBDT-4 (lvas)": "LBDT-4 CVPR2022",
                "ReferFormer (lvas)": "ReferFormer CVPR2022 (Video-Swin-B)"}),
    "table3a": ("table3a_components", "Table 3a: encoder components", {}, paper.TABLE3A, METRICS8, {}),
    "table3b": ("table3b_fusion", "Table 3b: fusion (no CMAM)", {}, paper.TABLE3B_FUSION, SHORT, {}),
    "table3c": ("table3c_cmam", "Table 3c: CMAM positions", {}, paper.TABLE3C_CMAM, SHORT, {}),
    "table3d": ("table3d_backbones", "Table 3d: backbones", {}, paper.TABLE3D_BACKBONES, SHORT, {}),
    "table_ytvos": ("table_ytvos", "Ref-YouTube-VOS: LBDT-4 (lvas: held-out 10 % of train; published: valid server)",
                    paper.TABLE_YTVOS, paper.TABLE_YTVOS, ("J", "F", "JF"), {"LBDT-4 (lvas)": "LBDT-4 CVPR2022 (valid, server)"}),
    "table_mevis": ("table_mevis", "MeViS: lvas rows on valid_u (local); published rows labelled with their split",
                    paper.TABLE_MEVIS, paper.TABLE_MEVIS, ("J", "F", "JF"), {}),
    "methods": ("methods", "Methods from one registry", {}, {}, METRICS8, {}),
    "ablation": ("ablation", "Cross-paper ablation", {}, {}, SHORT, {}),
    "hparams": ("hparams", "Hyper-parameter search", {}, {}, METRICS8, {}),
}


PAPER_DATASET = {"table2": "jhmdb", "table_ytvos": "ytvos", "table_mevis": "mevis"}  # every other table is on A2D Sentences
KIND_COLS = ("appearance/AP", "motion/AP", "appearance/mIoU", "motion/mIoU")


def table_stem(spec) -> str:
    """The file stem of a sweep's main table (``table3a_components``, ...)."""
    return TABLES[spec.report if spec.report in TABLES else "hparams"][0]


def comparable(sr: SweepRuns) -> bool:
    """Whether the published figures measure the same thing as our runs (same dataset)."""
    datasets = {r.get("dataset") for r in sr.chosen().values()}
    want = PAPER_DATASET.get(sr.spec.report, "a2d")
    return not datasets or datasets == {want}


def p_text(p: float, eq: str = "") -> str:
    return f"{eq}{p:.3f}" if p >= 0.001 else "< 0.001"


def _epochs(row: dict, key: str) -> str:
    vals = sorted({str(r.get(key)) for r in row["runs"] if r.get(key) not in (None, "", "None")}, key=_num)
    return "–" if not vals else vals[0] if len(vals) == 1 else f"{vals[0]}–{vals[-1]}"


def _num(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return float("inf")


@dataclass
class Table:
    """A table three ways: ``numbers`` (the CSV: mean, std, n, CI bounds per metric), ``shown``
    (Markdown/LaTeX cells: mean ± half-width) and ``means`` (numeric, to bold the best value)."""

    numbers: pd.DataFrame
    shown: pd.DataFrame
    means: pd.DataFrame
    stem: str
    caption: str
    comparisons: dict[str, Comparison | None] = field(default_factory=dict)
    pairs: list[tuple[str, str, Comparison | None]] = field(default_factory=list)


def _records(sr: SweepRuns, tracking_uri: str | None) -> dict[str, list | None]:
    """Row name -> per seed, its run's per-sample test records (None when a run has none)."""
    out = {}
    for name, r in sr.chosen().items():
        recs = [sample_records(run, tracking_uri) for run in r["runs"]] if tracking_uri else [None]
        out[name] = None if any(x is None for x in recs) else recs
    return out


def seed_scores(row: dict, metric: str) -> dict:
    """Seed -> that seed's run score on ``metric`` (the unit of the test over seeds)."""
    return {p["seed"]: p["metrics"].get(metric) for p in row["runs"]}


def alpha_of(sr: SweepRuns) -> float:
    """The verdict's level: α, or α / looks for an adaptive seed plan (see lvas.stats)."""
    return ALPHA / sr.spec.seeds.looks


def _test(sr: SweepRuns, records: dict, a: str, b: str) -> Comparison | None:
    """Row ``a`` against row ``b`` over seeds, with the secondary test over samples when records exist."""
    chosen = sr.chosen()
    if a not in chosen or b not in chosen:
        return None
    c = compare(seed_scores(chosen[a], sr.spec.metric), seed_scores(chosen[b], sr.spec.metric), alpha_of(sr))
    if c is None or records.get(a) is None or records.get(b) is None:
        return c
    if catalogue.METRICS[sr.spec.metric].evaluator != "segmentation":  # not computable from the {I, U} records
        return c
    s = compare_samples(records[a], records[b], sr.spec.metric, chosen[a].get("protocol") or "paper")
    return c if s is None else dataclasses.replace(c, p_samples=s.p)


def compare_with_baseline(sr: SweepRuns, records: dict) -> dict[str, Comparison | None]:
    """Row name -> test of the row against the sweep's baseline row (on the sweep metric)."""
    base_name = next((n for n, r in sr.chosen().items() if r["label"] == sr.spec.baseline), None)
    if base_name is None:
        return {}
    return {name: _test(sr, records, name, base_name) for name in sr.chosen() if name != base_name}


def compare_pairs(sr: SweepRuns, records: dict) -> list[tuple[str, str, Comparison | None]]:
    """The sweep's ``report.pairs``: (row, other row, test of row against other; None when either row
    is missing or has fewer than two seeds)."""
    return [(a, b, _test(sr, records, a, b)) for a, b in sr.spec.pairs]


DETECTABLE = "detectable Δ (80 % power)"


def _delta_cells(metric: str, c: Comparison | None, is_baseline: bool) -> dict[str, tuple]:
    """The Δ-vs-baseline columns of one row: column -> (CSV value, shown text); shown text None keeps a
    column in the CSV only (the Δ interval's bounds, P(row > baseline), the secondary test over samples)."""
    d, ci, p = f"Δ {metric} vs baseline", "95 % CI of Δ", "p (seeds)"
    csv_only = ("Δ ci_lo", "Δ ci_hi", "P(row > baseline)", "p_samples (networks fixed)", DETECTABLE)
    if is_baseline:
        return {d: (0.0, "baseline"), ci: (math.nan, ""), p: (math.nan, ""), **{k: (math.nan, None) for k in csv_only}}
    if c is None:
        return {d: (math.nan, "–"), ci: (math.nan, "–"), p: (math.nan, "–"), **{k: (math.nan, None) for k in csv_only}}
    mark = "" if c.significant else " (n.s.)"
    values = (c.lo, c.hi, c.p_better, math.nan if c.p_samples is None else c.p_samples, c.detectable)
    return {d: (c.delta, f"{signed(c.delta)}{mark}"), ci: (c.lo, c.interval_text()), p: (c.p, p_text(c.p)),
            **{k: (v, None) for k, v in zip(csv_only, values)}}


def build_table(sr: SweepRuns, tracking_uri: str | None = None) -> Table:
    """The sweep's table (see :class:`Table`): published rows, ours (mean ± 95 % CI over seeds, n),
    the paper's row and Δ, Δ vs the baseline row with its p-value, and the epochs.

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
    if any("JF" in r["metrics"] for r in chosen.values()):  # Ref-YouTube-VOS: J, F and J&F per expression
        cols = tuple(cols) + ("J", "F", "JF")
    records = _records(sr, tracking_uri) if (sr.spec.baseline or sr.spec.pairs) else {}
    comparisons = compare_with_baseline(sr, records)
    pairs = compare_pairs(sr, records)
    metric = sr.spec.metric
    numbers, shown, means = [], [], []

    def add(name: str, source: str, values: dict | None, intervals: dict | None = None, n: int | str = "",
            extra: dict | None = None) -> None:
        num = {"row": name, "source": source, "n": n if n != "" else math.nan}
        txt = {"row": name, "source": source, "n": "1 (no interval)" if n == 1 else str(n)}
        mean = {"row": name, "source": source}
        for c in cols:
            iv = (intervals or {}).get(c)
            v = (values or {}).get(c, math.nan)
            mean[c] = v
            if iv is not None:
                num.update({c: iv.mean, f"{c} std": iv.std, f"{c} ci_lo": iv.lo, f"{c} ci_hi": iv.hi})
                txt[c] = iv.text()
            else:
                num[c] = v
                txt[c] = "–" if v != v else f"{v:.1f}"
        for k, v in (extra or {}).items():
            num[k] = v[0]
            if v[1] is not None:  # None: a CSV-only column
                txt[k] = v[1]
        numbers.append(num)
        shown.append(txt)
        means.append(mean)

    for name, m in published.items():
        add(name, "published", m)
    for name, r in sr.rows.items():
        label = r["label"] if r else name
        counterpart = paper_rows.get(own_paper.get(label, label))
        if name in chosen:
            row = chosen[name]
            extra = {"epoch": (_epochs(row, "selected_epoch"), _epochs(row, "selected_epoch") + (
                f" ({row['select']})" if row.get("select") else "")),
                     "best-val epoch": (_epochs(row, "best_val_epoch"), _epochs(row, "best_val_epoch"))}
            if sr.spec.baseline:
                c = comparisons.get(name)
                extra.update(_delta_cells(metric, c, row["label"] == sr.spec.baseline))
            n = len(row["runs"])
            add(name, "lvas", row["metrics"], row["intervals"], n, extra)
            numbers[-1]["status"] = shown[-1]["status"] = "FINISHED"
            numbers[-1]["runs"] = " ".join(p["run_id"] for p in row["runs"])  # in the CSV; under the table
        else:
            status = "missing" if r is None else f"missing ({r['status']})"
            add(name, "lvas", None, n=0)
            numbers[-1]["status"] = shown[-1]["status"] = status
        if counterpart is not None and not published:
            add(name, "paper", counterpart)
        if counterpart is not None and name in chosen:
            add(name, "Δ lvas − paper", {c: chosen[name]["metrics"].get(c, math.nan) - counterpart.get(c, math.nan)
                                        for c in cols})
    frames = [pd.DataFrame(x) for x in (numbers, shown, means)]
    if report == "hparams":
        frames = [f[f["source"] == "lvas"].reset_index(drop=True) for f in frames]
    order = [c for c in frames[1].columns if c not in ("status", "runs")] + \
        [c for c in ("status", "runs") if c in frames[1].columns]
    frames[1] = frames[1][order].fillna("")
    return Table(frames[0], frames[1], frames[2], stem, caption, comparisons, pairs)


def provenance(sr: SweepRuns, table: Table | None = None) -> str:
    chosen = sr.chosen()
    datasets = sorted({str(r.get("dataset")) for r in chosen.values()})
    protocols = sorted({str(r.get("protocol")) for r in chosen.values()})
    splits = sorted({str(r.get("split")) for r in chosen.values()})
    commits = sorted({c[:10] for r in chosen.values() for c in r.get("commits", [])})
    seeds = sorted({str(s) for r in chosen.values() for s in r["seeds"]})
    missing = [k for k in sr.rows if k not in chosen]
    selects = sorted({str(r.get("select")) for r in chosen.values()})
    lines = [
        f"Sweep `{sr.spec.name}` ({sr.spec.path.name}), metric {sr.spec.metric} ({sr.spec.goal}); "
        f"dataset {', '.join(datasets) or '–'}, split {', '.join(splits) or '–'}, protocol {', '.join(protocols) or '–'}.",
        f"Parent run: `{sr.parent_run_id}`. Commit(s): {', '.join(commits) or '–'}"
        f"{' (some runs from a tree with uncommitted changes in lvas/)' if any(r.get('dirty') for r in chosen.values()) else ''}. "
        f"Seeds: {', '.join(seeds) or '–'}; per row: "
        + "; ".join(f"{k} {', '.join(str(s) for s in r['seeds'])}" for k, r in chosen.items()) + ". "
        f"Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by `lvas report`; the run ids of every row are "
        f"listed below and in the CSV.",
        "Each `lvas` cell is the **mean over seeds ± the half-width of its 95 % confidence interval** (Student t, "
        "n − 1 degrees of freedom; `n` seeds, the latest finished run of each, runs of an older version of the "
        "sweep file excluded); n = 1 shows the value alone. Never the best seed. Each run's model is the epoch "
        f"`train.select` chose ({', '.join(selects) or '–'}; `epoch`), scored once on the test split; "
        "`best-val epoch` is where the validation metric peaked when a validation split was recorded (reported, "
        "never used to pick a test score). Metrics in percent; AP = mean of P@0.50:0.05:0.95.",
    ]
    alpha = alpha_of(sr)
    level = f"{alpha:g}" + (f" (α = {ALPHA} / {sr.spec.seeds.looks} looks of the adaptive seed plan)"
                            if sr.spec.seeds.looks > 1 else "")
    machines: dict[str, list[str]] = {}
    for name, r in chosen.items():
        for m in dict.fromkeys(p["machine"] for p in r["runs"]):
            machines.setdefault(m, []).append(name)
    scales: dict[str, list[str]] = {}
    for name, r in chosen.items():
        for s in dict.fromkeys(p.get("scale", "not recorded") for p in r["runs"]):
            scales.setdefault(s, []).append(name)
    mixed = [name for name, r in chosen.items() if len({p.get("scale") for p in r["runs"]}) > 1]
    if scales:
        lines.append("Scale (processes, batch per device, accumulation, effective batch, lr, devices): " + "; ".join(
            s + ("" if len(scales) == 1 else f" ({', '.join(rows)})") for s, rows in scales.items()) + "."
            + (f" **Rows whose seeds ran at different scales**: {', '.join(mixed)} -- their runs saw the same "
               f"global batch only where the effective batch and lr agree." if mixed else ""))
    if machines:
        lines.append("Machines (what decides the floating-point path; runs reproduce to the last digit only on the "
                     "same one, elsewhere within their intervals): " + "; ".join(
                         f"{m}" + ("" if len(machines) == 1 else f" ({', '.join(rows)})") for m, rows in machines.items())
                     + ".")
    if sr.spec.baseline or (table is not None and table.pairs):
        lines.append(f"`Δ {sr.spec.metric} vs baseline`: the row's mean − the baseline row `{sr.spec.baseline}`'s, over "
                     f"seeds, with its `95 % CI of Δ`; `p (seeds)`: {TEST_NAME}. The unit is the training run, so the "
                     f"verdict is about training the rows again, not about these particular networks. **(n.s.)**: "
                     f"not separated at {level} — the data do not show the rows differ (with few seeds most small "
                     f"differences are not shown). The CSV adds `P(row > baseline)` (share of paired seeds where the "
                     f"row scored higher) and `p_samples (networks fixed)`, the {SAMPLE_TEST_NAME}.")
    if table is not None and table.pairs:
        items = []
        for a, b, c in table.pairs:
            if c is None:
                items.append(f"`{a}` vs `{b}`: – (a row is missing or has fewer than two seeds)")
            else:
                items.append(f"`{a}` − `{b}`: Δ {sr.spec.metric} {signed(c.delta)} {c.interval_text()}, "
                             f"p {p_text(c.p, '= ')}{'' if c.significant else ' (n.s.)'}")
        lines.append(f"Pairs (same test, {sr.spec.metric}): " + "; ".join(items) + ".")
    if table is not None:
        lines.extend(power_lines(sr, table))
    if any(r.get("label") and r["label"] in paper_labels(sr) for r in chosen.values()):
        lines.append("`paper` is the published figure for the same setting, `Δ lvas − paper` the difference of means.")
    if missing:
        lines.append(f"**Missing rows**: {', '.join(missing)} (not run, failed, still running or stale).")
    if not comparable(sr):
        lines.append("These runs are not on the paper's dataset, so the published figures are not shown beside "
                     "them; `appearance/*` and `motion/*` break the metrics down by query kind.")
    return "\n\n".join(lines)


def tests_of(table: Table, sr: SweepRuns) -> list[tuple[str, str, Comparison | None]]:
    """Every test the table makes: each row against the baseline, then the sweep's pairs."""
    base = next((r["label"] for r in sr.chosen().values() if r["label"] == sr.spec.baseline), sr.spec.baseline)
    return [(a, base, c) for a, c in table.comparisons.items()] + list(table.pairs)


def effect_tests(sr: SweepRuns, table: Table) -> list[tuple[str, str, float, str, Comparison | None]]:
    """``report.effects`` with the test of the same two rows (its observed seed-to-seed spread)."""
    known = {(a, b): c for a, b, c in tests_of(table, sr)}
    out = []
    for a, b, delta, source in sr.spec.effects:
        c = known.get((a, b)) or known.get((b, a)) or _test(sr, {}, a, b)
        out.append((a, b, delta, source, c))
    return out


def power_lines(sr: SweepRuns, table: Table) -> list[str]:
    """What the tests could have shown: the smallest Δ each detects with 80 % power at its seeds and the
    spread the runs show, and the seeds a published Δ (``report.effects``) would need."""
    m = sr.spec.metric
    lines = []
    found = [(a, b, c) for a, b, c in tests_of(table, sr) if c is not None and c.detectable == c.detectable]
    if found:
        lines.append(f"Power (`{DETECTABLE}` in the CSV): the smallest Δ {m} each test separates 4 times in 5 "
                     f"(α {found[0][2].alpha:g}, two-sided, noncentral t) at its seeds and the seed-to-seed spread "
                     f"these runs show — a difference below it can hide behind \"n.s.\": " + "; ".join(
                         f"`{a}` − `{b}` {c.detectable:.1f} ({c.seeds} seeds)" for a, b, c in found) + ".")
    effects = effect_tests(sr, table)
    if effects:
        items = []
        for a, b, delta, source, c in effects:
            where = f" ({source})" if source else ""
            if c is None or c.sd != c.sd:
                items.append(f"{signed(delta)}{where}, `{a}` − `{b}`: – (a row has fewer than two seeds)")
            else:
                n = seeds_needed(delta, c.sd, c.alpha)
                items.append(f"{signed(delta)}{where}, `{a}` − `{b}`: {n if n < 10_000 else '10000 or more'} seeds "
                             f"per row (a seed's Δ varies by sd {c.sd:.1f} here)")
        lines.append(f"Seeds needed to detect the published Δ {m} with 80 % power at the spread these runs show: "
                     + "; ".join(items) + ".")
    return lines


def verdicts(sr: SweepRuns, table: Table, marks: "Marks | None") -> dict:
    """What must survive a rerun on another machine (``lvas compare``): each row's mean, spread and
    seeds on every metric, each test's Δ, interval, p and verdict, the marks, the published Δs' seeds."""
    rows = {}
    for name, r in sr.chosen().items():
        rows[name] = {c: {"mean": iv.mean, "std": iv.std, "n": iv.n, "half": iv.half}
                      for c, iv in r["intervals"].items() if iv is not None}

    def verdict(c: Comparison | None) -> str:
        if c is None:
            return "untested"
        if not c.significant:
            return "not separated"
        return "higher" if c.delta > 0 else "lower"

    tests = [{"row": a, "other": b, "delta": None if c is None else c.delta, "lo": None if c is None else c.lo,
              "hi": None if c is None else c.hi, "p": None if c is None else c.p,
              "detectable": None if c is None else c.detectable, "verdict": verdict(c)}
             for a, b, c in tests_of(table, sr)]
    names = table.means["row"]
    return {"sweep": sr.spec.name, "metric": sr.spec.metric, "goal": sr.spec.goal, "alpha": alpha_of(sr),
            "table": table.stem, "rows": rows, "tests": tests,
            "marks": {"bold": sorted(names[i] for i in (marks.best if marks else ())),
                      "dagger": sorted(names[i] for i in (marks.tied if marks else ()))},
            "effects": [{"row": a, "other": b, "delta": d, "source": src,
                         "seeds_needed": None if c is None or c.sd != c.sd else seeds_needed(d, c.sd, c.alpha)}
                        for a, b, d, src, c in effect_tests(sr, table)],
            "machines": sorted({str(p["machine"]) for r in sr.chosen().values() for p in r["runs"]}),
            "commits": sorted({str(p["commit"]) for r in sr.chosen().values() for p in r["runs"] if p.get("commit")})}


def _json_safe(x):
    """NaN-free JSON: numpy numbers as Python numbers (NaN stays NaN and json writes it as NaN)."""
    return x.item() if hasattr(x, "item") else str(x)


def paper_labels(sr: SweepRuns) -> set[str]:
    report = sr.spec.report if sr.spec.report in TABLES else "hparams"
    return set(TABLES[report][3]) if comparable(sr) else set()


def best_marks(sr: SweepRuns, table: Table) -> Marks | None:
    """Which cells of the sweep metric's column the numbers support marking: the row with the best
    mean in bold only when the test over seeds separates it from every other of our rows (p < α and
    better); otherwise that row and every row it is not separated from with a dagger, together."""
    metric, chosen = sr.spec.metric, sr.chosen()
    if metric not in table.means:
        return None
    ours = table.means[(table.means["source"] == "lvas") & table.means["row"].isin(list(chosen))]
    vals = pd.to_numeric(ours[metric], errors="coerce").dropna()
    if len(vals) < 2:
        return None
    sign = 1 if sr.spec.goal == "maximize" else -1
    best_idx = (vals * sign).idxmax()
    best = table.means.loc[best_idx, "row"]
    tied = set()
    for idx in vals.index:
        if idx == best_idx:
            continue
        c = _test(sr, {}, best, table.means.loc[idx, "row"])
        if c is None or not c.significant or sign * c.delta <= 0:
            tied.add(idx)
    test = f"the test over seeds of the p column, p < {alpha_of(sr):g}"
    if not tied:
        return Marks(metric, best=frozenset({best_idx}),
                     note=f"Bold: the best mean {metric}, separated from every other row ({test}).")
    return Marks(metric, tied=frozenset({best_idx, *tied}),
                 note=f"†: the best mean {metric} and the rows not separated from it ({test} not reached): "
                      f"the data do not rank them.")


def latex_columns(table: Table, columns: list[str] | None = None) -> list[str]:
    """The .tex's columns: ``columns`` (``all``: every column), else the paper's own: the metrics
    of Tables 1-3 (P@0.5-0.9, AP, oIoU, mIoU) and J, F, J&F, with the row's source and seed count."""
    if columns and columns != ["all"]:
        unknown = [c for c in columns if c not in table.shown.columns]
        if unknown:
            raise ConfigError(f"--columns: {', '.join(unknown)} not in the table; its columns: "
                              f"{', '.join(table.shown.columns)}")
        return ["row", *[c for c in columns if c != "row"]]
    if columns == ["all"]:
        return list(table.shown.columns)
    keep = ("row", "source", "n", *catalogue.PAPER_COLUMNS, *catalogue.VIDEO)
    return [c for c in table.shown.columns if c in keep]


def write_sweep_tables(sr: SweepRuns, out_dir: Path, tracking_uri: str | None = None,
                       columns: list[str] | None = None) -> tuple[list[Path], Table]:
    table = build_table(sr, tracking_uri)
    notes = provenance(sr, table)
    runs = {name: " ".join(p["run_id"] for p in row["runs"]) + f" (config hash {', '.join(dict.fromkeys(row['config_hashes']))})"
            for name, row in sr.chosen().items()}
    marks = best_marks(sr, table)
    paths = write_table(table.shown, out_dir, table.stem, f"{table.caption} — {sr.spec.name}", notes=notes,
                        marks=marks, csv=table.numbers, runs=runs, latex_columns=latex_columns(table, columns))
    verdict_file = Path(out_dir) / f"{table.stem}.verdicts.json"  # what `lvas compare` reads
    write_atomic(verdict_file, json.dumps(verdicts(sr, table, marks), indent=1, sort_keys=True, default=_json_safe) + "\n")
    paths.append(verdict_file)
    cross = protocol_table(sr)
    if cross is not None:
        shown, numbers = cross
        paths += write_table(shown, out_dir, f"{table.stem}_protocols",
                             f"{table.caption} — {sr.spec.name}: the same predictions under every protocol",
                             notes=PROTOCOL_NOTE, csv=numbers)
    else:  # an earlier report's every-protocol table would no longer match this one
        for suffix in (".md", ".tex", ".csv"):
            old = Path(out_dir) / f"{table.stem}_protocols{suffix}"
            if old.is_file() or old.is_symlink():
                old.unlink()
    return paths, table


PROTOCOL_NOTE = ("Each row's saved test predictions scored under every registered protocol (`lvas list protocol`): "
                 "`paper` = the released CSTM/ACGA evaluation (threshold 0.5 x the per-sample maximum, OpenCV "
                 "round trips), `lbdt` = the released LBDT evaluation (threshold 0.5, nearest upsampling), "
                 "`strict` = logits resized to the original frame, threshold 0.5, native ground truth, `coco` / "
                 "`coco_top1` = MTTR's and ReferFormer's evaluation: `mAP` is COCO mask AP (pycocotools, "
                 "categories ignored, detections ranked over the test set by their score, here the mean probability "
                 "inside the mask), their AP / IoUs with a strict `>`; one mask per query, so `coco` = `coco_top1` "
                 "for these models. Mean ± 95 % CI over seeds. A difference between lines of one row is the metric, "
                 "not the model.")


def protocol_table(sr: SweepRuns) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """One line per (row, protocol), columns AP / oIoU / mIoU / mAP, from the
    ``protocol/<name>/<metric>`` metrics (long, so it stays legible with any number of protocols):
    (shown cells "mean ± half-width", numbers: mean, half-width and n per metric), or None when the
    runs predate them."""
    chosen = sr.chosen()
    keys = sorted({k for row in chosen.values() for k in row["intervals"] if k.startswith("protocol/")})
    if not keys:
        return None
    protocols = list(dict.fromkeys(k.split("/")[1] for k in keys))
    metrics = [m for m in ("AP", "oIoU", "mIoU", "mAP") if any(k.endswith("/" + m) for k in keys)]
    shown, numbers = [], []
    for name, row in chosen.items():
        main = row.get("protocol") or "–"
        for proto in protocols:
            rec = {"row": name, "protocol": proto + (" (scored with)" if proto == main else ""),
                   "n": str(len(row["runs"]))}
            num = {"row": name, "protocol": proto, "scored with": proto == main, "n": len(row["runs"])}
            for m in metrics:
                iv = row["intervals"].get(f"protocol/{proto}/{m}")
                rec[m] = iv.text() if iv is not None else "–"
                num[m] = iv.mean if iv is not None else math.nan
                num[f"{m} ci_half"] = iv.half if iv is not None else math.nan
            shown.append(rec)
            numbers.append(num)
    return pd.DataFrame(shown), pd.DataFrame(numbers)
