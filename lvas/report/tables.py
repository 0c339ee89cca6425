"""Writing a table as Markdown, LaTeX (booktabs) and CSV from one DataFrame."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "Δ": r"$\Delta$", "−": r"$-$", "×": r"$\times$", "–": "--"}


def latex_escape(text: object) -> str:
    """Escape LaTeX's special characters in a cell or header."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _fmt(value: object, digits: int) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_latex(df: pd.DataFrame, caption: str = "", best: Mapping[str, str] | None = None, digits: int = 1,
             candidates: pd.Series | None = None, numbers: pd.DataFrame | None = None) -> str:
    """A booktabs tabular; the best value of each column named in ``best`` ("max"/"min") in bold,
    among the rows where ``candidates`` is True (all rows by default). ``numbers``: the values to
    compare when ``df`` holds formatted cells (e.g. "67.6 ± 2.1"); same index as ``df``."""
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
    align = "".join("r" if pd.api.types.is_numeric_dtype((ref if c in ref else df)[c]) else "l" for c in df.columns)
    lines = []
    if caption:
        lines.append(f"% {latex_escape(caption)}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule",
              " & ".join(latex_escape(c) for c in df.columns) + r" \\", r"\midrule"]
    for idx, row in df.iterrows():
        cells = []
        for col in df.columns:
            text = latex_escape(_fmt(row[col], digits))
            if idx in bold.get(col, ()):
                text = rf"\textbf{{{text}}}"
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def write_table(df: pd.DataFrame, out_dir: str | Path, stem: str, caption: str = "",
                best: Mapping[str, str] | None = None, notes: str = "", digits: int = 1,
                candidates: pd.Series | None = None, numbers: pd.DataFrame | None = None,
                csv: pd.DataFrame | None = None) -> list[Path]:
    """Write ``<stem>.md`` (caption, table, notes), ``<stem>.tex`` and ``<stem>.csv`` (``csv`` if
    given: the numbers behind formatted cells, else ``df``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shown = df.map(lambda v: _fmt(v, digits))
    md = [f"**{caption}**", ""] if caption else []
    md.append(shown.to_markdown(index=False))
    if notes:
        md += ["", notes]
    paths = [out / f"{stem}.md", out / f"{stem}.tex", out / f"{stem}.csv"]
    paths[0].write_text("\n".join(md) + "\n")
    tex = to_latex(df, caption, best, digits, candidates, numbers)
    if notes:
        tex = "".join(f"% {line}\n" for line in notes.splitlines() if line.strip()) + tex
    paths[1].write_text(tex)
    (csv if csv is not None else df).to_csv(paths[2], index=False)
    return paths
