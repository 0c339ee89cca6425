"""Writing a table as Markdown, LaTeX (booktabs) and CSV from one DataFrame.

The LaTeX is a float ready to ``\\input`` in a paper (two-column or not): the paper's columns by
default (``latex_columns``; the Markdown and the CSV keep every column), each interval in a smaller
size after its mean (``67.6 ±2.1``), a long row label wrapped in a paragraph column, ``table*`` when
the tabular is estimated wider than a two-column page's column (3.3 in, CVPR/ICCV/IEEE), so that it is
never shrunk below 80 % of the text size (``\\resizebox`` to ``\\linewidth`` only when still
wider; its natural width and the line width go to the log as ``lvas-table`` lines, which the
pdflatex test reads). Every cell escaped for the default OT1 font encoding (``>`` would print as
``¿``), provenance and run ids as ``%`` comments. Needs ``\\usepackage{booktabs,graphicx}``.

Markdown and LaTeX drop the columns that hold one value in every row (it is said once under the
table instead); the CSV keeps every column and the full run ids.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd

from lvas.liveness import write_atomic

_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
                  "Δ": r"$\Delta$", "−": r"$-$", "×": r"$\times$", "–": "--", "—": "---", "±": r"$\pm$", "≥": r"$\geq$",
                  "≤": r"$\leq$", "·": r"$\cdot$", "²": r"$^2$", "…": r"\ldots{}", "†": r"$^\dagger$", "α": r"$\alpha$"}
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


@dataclass(frozen=True)
class Marks:
    """What a table marks in one column, and why (said under the table): ``best`` (bold) the row
    separated from every other by the test; ``tied`` (†) the rows the test does not separate from
    the best mean."""

    column: str
    best: frozenset = frozenset()
    tied: frozenset = frozenset()
    note: str = ""


COLUMN_PT = 241.0  # \columnwidth of a two-column paper (3.35 in), in points
TEXT_PT = 505.0  # \textwidth of the same page (7 in)
_CHAR_PT, _SMALL_PT, _SEP_PT = 5.0, 3.7, 12.0  # a 10 pt digit, a \scriptsize one, 2 \tabcolsep
WRAP_CHARS = 28  # a longer row label is set in a paragraph column of 11 em


def _split_interval(text: str) -> tuple[str, str]:
    m = re.match(r"^(.*\S) ± (\S+)$", text)
    return (m.group(1), m.group(2)) if m else (text, "")


def estimated_width(shown: pd.DataFrame) -> float:
    """The tabular's natural width in points (digits 5 pt, the interval's \\scriptsize 3.7 pt): used
    only to choose ``table`` or ``table*``; the pdflatex test measures the real one."""
    total = 0.0
    for c in shown.columns:
        cells = _header_lines(str(c)) + [str(v) for v in shown[c]]
        if c == shown.columns[0] and max(len(x) for x in cells) > WRAP_CHARS:
            total += 110.0 + _SEP_PT
            continue
        widest = 0.0
        for x in cells:
            main, small = _split_interval(x)
            widest = max(widest, len(main) * _CHAR_PT + (len(small) + 1) * _SMALL_PT * bool(small))
        total += widest + _SEP_PT
    return total


def _header_lines(name: str) -> list[str]:
    """A header of more than 8 characters broken at the space nearest its middle (two lines)."""
    if len(name) <= 8 or " " not in name:
        return [name]
    spaces = [i for i, ch in enumerate(name) if ch == " "]
    cut = min(spaces, key=lambda i: abs(i - len(name) / 2))
    return [name[:cut], name[cut + 1:]]


def _header_tex(name: str, align: str) -> str:
    lines = _header_lines(name)
    if len(lines) == 1:
        return latex_escape(name)
    pos = "r" if align == "r" else "l"
    return rf"\shortstack[{pos}]{{{latex_escape(lines[0])}\\{latex_escape(lines[1])}}}"


def _cell_tex(text: str, breakable: bool = False) -> str:
    main, small = _split_interval(text)
    out = breakable_tex(main) if breakable else latex_escape(main)
    return out + rf"{{\scriptsize\,$\pm${latex_escape(small)}}}" if small else out


BREAK_EVERY = 8  # characters between break points in a long unbroken run of a wrapped label


def breakable_tex(text: str) -> str:
    """``latex_escape(text)`` with a line-break point (``\\allowbreak{}``) every few characters of any
    run without spaces longer than a column holds: a 150-character label with no space wraps inside
    its paragraph column instead of running hundreds of points past it."""
    out = []
    for word in re.split(r"( +)", str(text)):
        if len(word) <= 2 * BREAK_EVERY or word.isspace():
            out.append(latex_escape(word))
            continue
        pieces = [word[i:i + BREAK_EVERY] for i in range(0, len(word), BREAK_EVERY)]
        out.append(r"\allowbreak{}".join(latex_escape(p) for p in pieces))
    return "".join(out)


def to_latex(df: pd.DataFrame, caption: str = "", digits: int = 1, marks: Marks | None = None, label: str = "",
             comments: str = "") -> str:
    """A ``table`` (or ``table*``) float around a booktabs tabular (see the module docstring);
    ``marks`` bolds / daggers cells of one column. ``comments``: ``%`` lines above the float."""
    shown = df.map(lambda v: _fmt(v, digits))
    wide = estimated_width(shown) > COLUMN_PT
    env = "table*" if wide else "table"
    first = shown.columns[0]
    wrap = max(len(str(x)) for x in [first, *shown[first]]) > WRAP_CHARS
    align = "".join(("p{11em}" if wrap and c == first else "r" if _numeric(shown[c]) else "l") for c in df.columns)
    lines = [f"% {ascii_text(line)}" for line in comments.splitlines() if line.strip()]
    lines += [r"% needs \usepackage{booktabs,graphicx}", rf"\begin{{{env}}}[t]", r"\centering"]
    if caption:
        note = f". {marks.note}" if marks is not None and marks.note else ""
        lines.append(rf"\caption{{{latex_escape(caption + note)}}}")
    tag = re.sub(r"[^A-Za-z0-9:_-]", "-", label)
    if label:
        lines.append(rf"\label{{tab:{tag}}}")
    lines += [r"\setbox0=\hbox{%", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
              " & ".join(_header_tex(str(c), a) for c, a in zip(df.columns, _aligns(align))) + r" \\", r"\midrule"]
    for idx, row in shown.iterrows():
        cells = []
        for col in df.columns:
            text = _cell_tex(row[col], breakable=wrap and col == first)
            if wrap and col == first:  # ragged right in the paragraph column (no stretched spaces)
                text = rf"\raggedright {text}"  # (rows end with \tabularnewline, which \raggedright leaves alone)
            if marks is not None and col == marks.column:
                if idx in marks.best:
                    text = rf"\textbf{{{text}}}"
                elif idx in marks.tied:
                    text = rf"{text}$^\dagger$"
            cells.append(text)
        lines.append(" & ".join(cells) + r" \tabularnewline")
    lines += [r"\bottomrule", r"\end{tabular}}%",
              rf"\typeout{{lvas-table {tag}: width=\the\wd0, linewidth=\the\linewidth}}%",
              # shrink to the line only when still wider (never enlarge)
              r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\box0}\else\box0\fi",
              rf"\end{{{env}}}", ""]
    return "\n".join(lines)


def _aligns(spec: str) -> list[str]:
    """The column letters of a tabular spec (``p{11em}`` counts as one ``p``)."""
    return [m[0] for m in re.findall(r"p\{[^}]*\}|[lrc]", spec)]


def _mark_md(shown: pd.DataFrame, marks: Marks | None) -> pd.DataFrame:
    if marks is None or marks.column not in shown:
        return shown
    out = shown.copy()
    for idx in out.index:
        if idx in marks.best:
            out.loc[idx, marks.column] = f"**{out.loc[idx, marks.column]}**"
        elif idx in marks.tied:
            out.loc[idx, marks.column] = f"{out.loc[idx, marks.column]} †"
    return out


def write_table(df: pd.DataFrame, out_dir: str | Path, stem: str, caption: str = "", notes: str = "", digits: int = 1,
                marks: Marks | None = None, csv: pd.DataFrame | None = None, runs: Mapping[str, str] | None = None,
                latex_columns: Sequence[str] | None = None) -> list[Path]:
    """Write ``<stem>.md`` (caption, table, notes), ``<stem>.tex`` and ``<stem>.csv`` (``csv`` if
    given: the numbers behind formatted cells, else ``df``).

    ``runs``: row -> its MLflow run ids, listed under the table (Markdown) and as comments (LaTeX),
    never as a column. Columns with one value in every row are dropped from Markdown and LaTeX and
    said once under the table. ``latex_columns``: the columns the .tex keeps (the first column always;
    default: all).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shown = df.map(lambda v: _fmt(v, digits))
    constant = constant_columns(shown)
    keep = [c for c in df.columns if c not in constant]
    same = "Every row: " + "; ".join(f"{k} {v}" for k, v in constant.items()) + "." if constant else ""
    run_lines = [f"{row}: {ids}" for row, ids in (runs or {}).items() if ids]
    md = [f"**{caption}**", ""] if caption else []
    md.append(_mark_md(shown[keep], marks).map(markdown_cell).rename(columns=markdown_cell).to_markdown(index=False))
    for extra in (same, marks.note if marks is not None else "", notes):
        if extra:
            md += ["", extra]
    if run_lines:
        md += ["", "MLflow runs (per row, one per seed): " + "; ".join(f"`{r}`" for r in run_lines) + "."]
    paths = [out / f"{stem}.md", out / f"{stem}.tex", out / f"{stem}.csv"]
    # written beside and renamed over: a planted symlink at one of these names is replaced, never followed
    write_atomic(paths[0], "\n".join(md) + "\n")
    comments = "\n".join(x for x in (notes, same, "MLflow runs:" if run_lines else "", *run_lines) if x)
    tex_cols = [c for c in keep if latex_columns is None or c == keep[0] or c in latex_columns]
    left_out = [c for c in keep if c not in tex_cols]
    if left_out:
        comments += "\nColumns in the .md and .csv only (lvas report --columns): " + ", ".join(left_out)
    write_atomic(paths[1], to_latex(df[tex_cols], caption, digits, marks, label=stem, comments=comments))
    write_atomic(paths[2], (csv if csv is not None else df).to_csv(index=False))
    return paths
