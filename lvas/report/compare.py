"""``lvas compare A B``: the same sweep run twice (two stores, two machines, two commits), side by side.

Reads the ``<table>.verdicts.json`` that ``lvas report`` writes beside each sweep table. For every
row: each run's mean ± 95 % half-width on the metric, and the difference of the two runs' means with
its Welch interval (the rows' seeds of the two runs are independent trainings). For every test the
table makes (each row against the baseline, the sweep's pairs) and for its marks (bold, †): the
verdict of each run and whether it is the same. Digits depend on the machine's floating-point path;
verdicts are what must survive. The exit status is 1 when any verdict flips.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from lvas.errors import ConfigError
from lvas.stats import signed

SUFFIX = ".verdicts.json"


def verdict_files(path: str | Path) -> dict[str, Path]:
    """Table stem -> its verdicts file, from a report folder (every table in it) or one file."""
    p = Path(path)
    if p.is_file():
        if not p.name.endswith(SUFFIX):
            raise ConfigError(f"{p}: expected a report folder or a {SUFFIX} file written by `lvas report`")
        return {p.name[: -len(SUFFIX)]: p}
    if not p.is_dir():
        raise ConfigError(f"{p}: no such report folder or file")
    found = {f.name[: -len(SUFFIX)]: f for f in sorted(p.rglob(f"*{SUFFIX}"))}
    if not found:
        raise ConfigError(f"{p}: no {SUFFIX} file (write the report with `lvas report` from lvas 0.3 on)")
    return found


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a verdicts file lvas wrote ({type(e).__name__})") from None
    if not isinstance(data, dict) or not {"metric", "rows", "tests", "marks"} <= set(data):
        raise ConfigError(f"{path}: not a verdicts file lvas wrote (expected metric, rows, tests, marks)")
    return data


def between_runs(a: dict | None, b: dict | None) -> tuple[float, float, float]:
    """B − A of one row's means (each {mean, std, n}) with its 95 % Welch interval (NaN where either
    run has fewer than two seeds)."""
    from scipy import stats

    if not a or not b:
        return math.nan, math.nan, math.nan
    d = b["mean"] - a["mean"]
    if a["n"] < 2 or b["n"] < 2 or a["std"] != a["std"] or b["std"] != b["std"]:
        return d, math.nan, math.nan
    va, vb = a["std"] ** 2 / a["n"], b["std"] ** 2 / b["n"]
    if va + vb == 0:
        return d, d, d
    df = (va + vb) ** 2 / (va ** 2 / (a["n"] - 1) + vb ** 2 / (b["n"] - 1))
    half = float(stats.t.ppf(0.975, df)) * math.sqrt(va + vb)
    return d, d - half, d + half


def _cell(m: dict | None) -> str:
    if not m or m["mean"] != m["mean"]:
        return "–"
    return f"{m['mean']:.1f}" if m["n"] < 2 or m["half"] != m["half"] else f"{m['mean']:.1f} ± {m['half']:.1f}"


def _test_text(t: dict | None) -> str:
    if t is None:
        return "–"
    if t["delta"] is None:
        return t["verdict"]
    p = t["p"]
    ptext = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    return f"{t['verdict']} ({signed(t['delta'])}, {ptext})"


def compare_tables(a: dict, b: dict, metric: str | None = None) -> tuple[list[str], int, int]:
    """Markdown lines comparing two runs of one table; (lines, verdicts compared, verdicts flipped)."""
    metric = metric or a["metric"]
    lines = [f"| row | A: {metric} | B: {metric} | Δ B − A [95 % CI] |", "|:--|:--|:--|:--|"]
    for row in dict.fromkeys([*a["rows"], *b["rows"]]):
        ma, mb = a["rows"].get(row, {}).get(metric), b["rows"].get(row, {}).get(metric)
        d, lo, hi = between_runs(ma, mb)
        interval = "" if lo != lo else f" [{signed(lo)}, {signed(hi)}]"
        lines.append(f"| {row} | {_cell(ma)} | {_cell(mb)} | {'–' if d != d else signed(d)}{interval} |")
    lines += ["", f"| test ({a['metric']}) | A | B | same verdict |", "|:--|:--|:--|:--|"]
    ta = {(t["row"], t["other"]): t for t in a["tests"]}
    tb = {(t["row"], t["other"]): t for t in b["tests"]}
    compared = flipped = 0
    for key in dict.fromkeys([*ta, *tb]):
        x, y = ta.get(key), tb.get(key)
        same = x is not None and y is not None and x["verdict"] == y["verdict"]
        compared += 1
        flipped += not same
        lines.append(f"| `{key[0]}` − `{key[1]}` | {_test_text(x)} | {_test_text(y)} | {'yes' if same else '**no**'} |")
    for mark, sign in (("bold", "bold"), ("dagger", "†")):
        x, y = sorted(a["marks"].get(mark, [])), sorted(b["marks"].get(mark, []))
        same = x == y
        compared += 1
        flipped += not same
        lines.append(f"| {sign} on | {', '.join(x) or 'none'} | {', '.join(y) or 'none'} | {'yes' if same else '**no**'} |")
    return lines, compared, flipped


def compare_reports(a: str | Path, b: str | Path, metric: str | None = None) -> tuple[str, int]:
    """The comparison of every table the two reports share, and the number of verdicts that flipped."""
    fa, fb = verdict_files(a), verdict_files(b)
    shared = [s for s in fa if s in fb]
    if not shared:
        raise ConfigError(f"{a} and {b} share no table (A: {', '.join(fa)}; B: {', '.join(fb)})")
    out, total, flips = [], 0, 0
    for stem in shared:
        va, vb = _read(fa[stem]), _read(fb[stem])
        if metric is not None and not any(metric in r for r in va["rows"].values()):
            known = sorted({k for r in va["rows"].values() for k in r})
            raise ConfigError(f"--metric {metric}: not in {fa[stem]}; its metrics: {', '.join(known)}")
        out.append(f"## {va.get('sweep', '?')} / {stem}")
        out.append("")
        out.append(f"A: {fa[stem]} — {', '.join(va.get('machines', [])) or 'machine not recorded'}; commit(s) "
                   f"{', '.join(c[:10] for c in va.get('commits', [])) or '–'}")
        out.append(f"B: {fb[stem]} — {', '.join(vb.get('machines', [])) or 'machine not recorded'}; commit(s) "
                   f"{', '.join(c[:10] for c in vb.get('commits', [])) or '–'}")
        out.append("")
        lines, n, f = compare_tables(va, vb, metric)
        out += lines + [""]
        total, flips = total + n, flips + f
        out.append(f"{n - f} of {n} verdicts the same" + (f"; **{f} flipped**" if f else "") + ".")
        out.append("")
    out.append("Cells: mean ± 95 % half-width over seeds; Δ B − A: the difference of the two runs' means with its "
               "Welch interval. Digits depend on each machine's floating-point path (its line above); the verdicts "
               "— each test's direction at its level, and the rows marked — are what must survive a rerun.")
    for stem in [s for s in fa if s not in fb] + [s for s in fb if s not in fa]:
        out.append(f"Only in {'A' if stem in fa else 'B'}: {stem}.")
    return "\n".join(out) + "\n", flips
