"""Writing a table as Markdown, LaTeX (booktabs) and CSV from one DataFrame.

The LaTeX is a float ready to ``\\input``: ``table`` environment, ``\\caption``, ``\\label{tab:<stem>}``,
a tabular shrunk to ``\\linewidth`` only when wider (``graphicx``'s ``\\resizebox``), every cell
escaped for the default OT1 font encoding (``>`` would print as ``¿``), provenance and run ids as
``%`` comments. Needs ``\\usepackage{booktabs,graphicx}``.

Markdown and LaTeX drop the columns that hold one value in every row (it is said once under the
table instead); the CSV keeps every column and the full run ids.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Mapping

import pandas as pd

from lvas.liveness import write_atomic

_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
                  "Δ": r"$\Delta$", "−": r"$-$", "×": r"$\times$", "–": "--", "—": "---", "±": r"$\pm$", "≥": r"$\geq$",
                  "≤": r"$\leq$", "·": r"$\cdot$", "²": r"$^2$", "…": r"\ldots{}"}
_NEGATIVE = re.compile(r"(?<![\w.])-(?=\d)")  # a minus sign before a number, not a hyphen in a word
KEEP = ("row",)  # never folded into the constant-columns line


def latex_escape(text: object) -> str:
    """Escape LaTeX's special characters in a cell or header (a leading minus becomes ``$-$``); every
    other character outside ASCII is written as its ASCII base letters (``é`` -> ``e``) or ``?``, so the
    output is plain ASCII whatever a label holds."""
    text = _NEGATIVE.sub("−", str(text))
    return "".join(_LATEX_SPECIAL.get(ch, ch) if ch in _LATEX_SPECIAL or ch.isascii() else _ascii(ch) for ch in text)


def _ascii(ch: str) -> str:
    if ord(ch) < 32 or ch == "\x7f":
        return " "
    base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    return "".join(_LATEX_SPECIAL.get(c, c) for c in base) or "?"


_PLAIN = {"±": "+/-", "Δ": "Delta", "−": "-", "–": "-", "—": "--", "×": "x", "≥": ">=", "≤": "<=", "·": ".",
          "…": "...", "²": "^2", "α": "alpha"}


def ascii_text(text: str) -> str:
    """Plain ASCII for a ``%`` comment line of the .tex (no LaTeX escaping: comments are not typeset)."""
    return "".join(ch if ch.isascii() else _PLAIN.get(ch) or unicodedata.normalize("NFKD", ch).encode(
        "ascii", "ignore").decode() or "?" for ch in text)


def markdown_cell(text: object) -> str:
    """A Markdown table cell: ``|`` escaped and line breaks flattened, so a label cannot break the table."""
    return re.sub(r"[\r\n]+", " ", str(text)).replace("|", "\\|")


def _fmt(value: object, digits: int) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def constant_columns(shown: pd.DataFrame) -> dict[str, str]:
    """Columns (other than ``row``) whose shown text is the same in every row, with that text;
    none for a one-row table (every column would be constant)."""
    if len(shown) < 2:
        return {}
    return {c: str(shown[c].iloc[0]) for c in shown.columns if c not in KEEP and shown[c].nunique(dropna=False) == 1}


def _numeric(col: pd.Series) -> bool:
    """A column of numbers (possibly formatted: "67.6 ± 2.1", "+2.8 (n.s.)", "< 0.001"): right-aligned."""
    cells = [str(v) for v in col if str(v) not in ("", "–", "nan")]
    return bool(cells) and all(re.match(r"^[<>]?\s*[+\-−]?\d", c) for c in cells)


def to_latex(df: pd.DataFrame, caption: str = "", best: Mapping[str, str] | None = None, digits: int = 1,
             candidates: pd.Series | None = None, numbers: pd.DataFrame | None = None, label: str = "",
             comments: str = "") -> str:
    """A ``table`` float around a booktabs tabular; the best value of each column named in ``best``
    ("max"/"min") in bold, among the rows where ``candidates`` is True (all rows by default).
    ``numbers``: the values to compare when ``df`` holds formatted cells (e.g. "67.6 ± 2.1"); same
    index as ``df``. ``comments``: lines written as ``%`` comments above the float."""
    best = best or {}
    bold: dict[str, set] = {}
    ref = numbers if numbers is not None else df
    for col, how in best.items():
        if col in df and col in ref:
            nums = pd.to_numeric(ref[col], errors="coerce")
            if candidates is not None:
                nums = nums.where(candidates)
            if nums.notna().any():
                target = nums.max() if how == "max" else nums.min()
                bold[col] = set(nums.index[nums == target])
    shown = df.map(lambda v: _fmt(v, digits))
    align = "".join("r" if _numeric(shown[c]) else "l" for c in df.columns)
    lines = [f"% {ascii_text(line)}" for line in comments.splitlines() if line.strip()]
    lines += [r"% needs \usepackage{booktabs,graphicx}", r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:_-]', '-', label)}}}")
    # shrink to the text width only when wider; never enlarge
    lines += [r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
              rf"\begin{{tabular}}{{{align}}}", r"\toprule",
              " & ".join(latex_escape(c) for c in df.columns) + r" \\", r"\midrule"]
    for idx, row in shown.iterrows():
        cells = []
        for col in df.columns:
            text = latex_escape(row[col])
            if idx in bold.get(col, ()):
                text = rf"\textbf{{{text}}}"
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}", ""]
    return "\n".join(lines)


def write_table(df: pd.DataFrame, out_dir: str | Path, stem: str, caption: str = "",
                best: Mapping[str, str] | None = None, notes: str = "", digits: int = 1,
                candidates: pd.Series | None = None, numbers: pd.DataFrame | None = None,
                csv: pd.DataFrame | None = None, runs: Mapping[str, str] | None = None) -> list[Path]:
    """Write ``<stem>.md`` (caption, table, notes), ``<stem>.tex`` and ``<stem>.csv`` (``csv`` if
    given: the numbers behind formatted cells, else ``df``).

    ``runs``: row -> its MLflow run ids, listed under the table (Markdown) and as comments (LaTeX),
    never as a column. Columns with one value in every row are dropped from Markdown and LaTeX and
    said once under the table.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shown = df.map(lambda v: _fmt(v, digits))
    constant = constant_columns(shown)
    keep = [c for c in df.columns if c not in constant]
    same = "Every row: " + "; ".join(f"{k} {v}" for k, v in constant.items()) + "." if constant else ""
    run_lines = [f"{row}: {ids}" for row, ids in (runs or {}).items() if ids]
    md = [f"**{caption}**", ""] if caption else []
    md.append(shown[keep].map(markdown_cell).rename(columns=markdown_cell).to_markdown(index=False))
    for extra in (same, notes):
        if extra:
            md += ["", extra]
    if run_lines:
        md += ["", "MLflow runs (per row, one per seed): " + "; ".join(f"`{r}`" for r in run_lines) + "."]
    paths = [out / f"{stem}.md", out / f"{stem}.tex", out / f"{stem}.csv"]
    # written beside and renamed over: a planted symlink at one of these names is replaced, never followed
    write_atomic(paths[0], "\n".join(md) + "\n")
    comments = "\n".join(x for x in (notes, same, "MLflow runs:" if run_lines else "", *run_lines) if x)
    tex = to_latex(df[keep], caption, best, digits, candidates, numbers, label=stem,
                   comments=comments)
    write_atomic(paths[1], tex)
    write_atomic(paths[2], (csv if csv is not None else df).to_csv(index=False))
    return paths
