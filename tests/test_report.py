"""Reports from an MLflow store the test fills: values, escaping, missing rows, figures."""

import re
import shutil
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from lvas.cli import main
from lvas.report.tables import latex_escape
from lvas.sweepspec import load_sweep

ROOT = Path(__file__).resolve().parents[1]
LOGGED = {
    "Spatial": {"P_at_0.5": 41.0, "P_at_0.6": 33.5, "P_at_0.7": 20.25, "P_at_0.8": 9.0, "P_at_0.9": 1.5,
                "AP": 18.3, "oIoU": 50.7, "mIoU": 44.4},
    "A&B_50%": {"P_at_0.5": 61.0, "P_at_0.6": 52.0, "P_at_0.7": 40.0, "P_at_0.8": 22.0, "P_at_0.9": 3.0,
                "AP": 31.4, "oIoU": 60.2, "mIoU": 52.6},
}


SEED_OFFSET = {0: -1.0, 1: 1.0}  # two seeds per variant: the row is their mean, 95 % CI half-width t(.975, 1)


def _tags(spec, label: str, seed: int, **extra) -> dict:
    t = spec.trial_for(label, {}, seed)
    return {"sweep": spec.name, "variant": label, "point": t.point, "seed": str(seed),
            "result_hash": spec.result_hash(t), "dataset": "a2d", "protocol": "paper", "git_commit": "abc123",
            "select": "last", "selected_epoch": "3", **extra}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_store(tmp_path)


def write_store(tmp_path):
    """A sweep file and an MLflow store with its runs (two seeds of two rows, one failed row):
    (sweep path, tracking URI, parent run id)."""
    import os

    sweep = tmp_path / "rep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "rep", "base": str(ROOT / "experiments/cpu_small.yaml"), "metric": {"name": "AP"}, "method": "grid",
        "report": "table3a", "seeds": [0, 1],
        "variants": [{"label": "Spatial", "overrides": {"model.mode": "spatial"}},
                     {"label": "A&B_50%", "overrides": {}},
                     {"label": "Missing", "overrides": {"model.mode": "temporal"}}]}))
    spec = load_sweep(sweep)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("rep")
    with mlflow.start_run(run_name="rep", tags={"sweep": "rep", "lvas_role": "sweep"}) as parent:
        for label, metrics in LOGGED.items():
            runs = [(s, SEED_OFFSET[s] - 7.0, {}) for s in (0, 1)]  # first runs of each seed: superseded by reruns
            runs += [(s, SEED_OFFSET[s], {}) for s in (0, 1)]
            runs += [(0, 50.0, {"result_hash": "0ld0ld0ld0ld"})]  # a run of an older sweep file: never in a row
            for seed, shift, extra in runs:
                with mlflow.start_run(run_name=label, nested=True, tags=_tags(spec, label, seed, **extra)):
                    mlflow.log_params({"model.mode": "spatial" if label == "Spatial" else "both",
                                       "data.test_split": "test"})
                    mlflow.log_metrics({f"test/{k}": v + shift for k, v in metrics.items()})
                    for step in (1, 2, 3):
                        mlflow.log_metrics({"train_loss": 1.0 / step, "val/AP": metrics["AP"] * step / 3}, step=step)
        # a failed run of the "Missing" variant
        with mlflow.start_run(run_name="Missing", nested=True, tags=_tags(spec, "Missing", 0)):
            pass
    client = mlflow.MlflowClient()
    missing = mlflow.search_runs(experiment_names=["rep"], filter_string="tags.variant = 'Missing'")["run_id"][0]
    client.set_terminated(missing, "FAILED")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return sweep, uri, parent.info.run_id


def test_tables_hold_the_mean_and_interval_over_seeds(store, tmp_path):
    from scipy import stats

    sweep, uri, parent = store
    assert main(["report", str(sweep), "--tracking-uri", uri, "--out", str(tmp_path / "reports")]) == 0
    out = tmp_path / "reports" / "rep"
    csv = pd.read_csv(out / "table3a_components.csv")
    ours = csv[csv["source"] == "lvas"].set_index("row")
    half = stats.t.ppf(0.975, 1) * 2 ** 0.5 / 2 ** 0.5  # values v - 1 and v + 1: std sqrt(2), n 2
    for label, metrics in LOGGED.items():
        assert ours.loc[label, "n"] == 2
        for k, v in metrics.items():
            col = k.replace("_at_", "@")
            # the mean of the latest run of each seed: not the best seed, not the stale run, not the first runs
            assert ours.loc[label, col] == pytest.approx(v)
            assert ours.loc[label, f"{col} std"] == pytest.approx(2 ** 0.5)
            assert ours.loc[label, f"{col} ci_lo"] == pytest.approx(v - half)
            assert ours.loc[label, f"{col} ci_hi"] == pytest.approx(v + half)
        assert ours.loc[label, "epoch"] == 3
    assert ours.loc["Missing", "status"] == "missing (FAILED)" and pd.isna(ours.loc["Missing", "AP"])
    paper_rows = csv[csv["source"] == "paper"].set_index("row")
    assert paper_rows.loc["Spatial", "AP"] == pytest.approx(29.0)  # Table 3a, row 1
    delta = csv[csv["source"] == "Δ lvas − paper"].set_index("row")
    assert delta.loc["Spatial", "mIoU"] == pytest.approx(44.4 - 47.7)
    md = (out / "table3a_components.md").read_text()
    assert f"20.2 ± {half:.1f}" in md  # 20.25 shown with one decimal, with its interval
    assert "**Missing rows**: Missing" in md and "dataset a2d, split test, protocol paper" in md
    assert "abc123" in md and "Seeds: 0, 1" in md and "95 % confidence interval" in md
    tex = (out / "table3a_components.tex").read_text()
    body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))  # provenance comments aside
    assert r"A\&B\_50\%" in body and "A&B_50%" not in body.replace(r"A\&B\_50\%", "")
    assert r"$\Delta$ lvas $-$ paper" in body
    # the best mean in bold, its interval in a smaller size: the test over seeds separates it here
    assert r"\toprule" in tex and rf"\textbf{{31.4{{\scriptsize\,$\pm${half:.1f}}}}}" in tex
    assert "Bold: the best mean AP, separated from every other row" in md
    # a float ready to \input: caption, label, shrunk to the line width only when wider; nothing that
    # OT1 prints wrongly (">" becomes "¿"); run ids as comments, not a column
    assert r"\begin{table" in body and r"\caption{Table 3a: encoder components --- rep. Bold: the best" in body
    assert r"\label{tab:table3a_components}" in body and r"\ifdim\wd0>\linewidth\resizebox{\linewidth}" in body
    cells = body[body.index(r"\midrule"):body.index(r"\bottomrule")]
    assert ">" not in cells.replace(r"\textgreater{}", "") and "±" not in cells and "runs" not in body.split(r"\midrule")[0]
    assert all(rid in tex for row in LOGGED for rid in ours.loc[row, "runs"].split())  # as % comments
    # Markdown: no run-id column (a line under the table instead), constant columns said once
    head = md.splitlines()[2]
    assert "runs" not in head and "status" in head  # status differs (one row is missing)
    assert "MLflow runs (per row, one per seed):" in md
    # the report is logged to the sweep's parent run
    arts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(parent, "report")}
    assert "report/table3a_components.md" in arts
    index = (tmp_path / "reports" / "README.md").read_text()
    assert "rep/table3a_components.md" in index and "precision_iou.png" in index


def test_figures_are_written_and_not_empty(store, tmp_path):
    sweep, uri, _ = store
    assert main(["report", str(sweep), "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 0
    figs = tmp_path / "r" / "rep" / "figures"
    names = sorted(p.name for p in figs.glob("*.png"))
    assert names == ["ablation_bars.png", "precision_iou.png", "training_curves.png"]
    from PIL import Image

    for p in figs.glob("*.png"):
        with Image.open(p) as im:
            assert im.size[0] > 300 and len(set(im.convert("L").getdata())) > 10  # real content


def test_a_sweep_never_run_gives_missing_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_sweep(ROOT / "sweeps" / "table3b_fusion.yaml")
    from lvas.report.generate import report_sweep
    from lvas.tracking import open_store

    open_store(f"sqlite:///{tmp_path / 'empty.db'}")  # a store without this sweep's runs (report never creates one)
    res = report_sweep(spec, f"sqlite:///{tmp_path / 'empty.db'}", tmp_path / "reports")
    assert res["missing"] == ["Add", "Max", "LGFS"] and res["figures"] == []
    csv = pd.read_csv(tmp_path / "reports" / "table3b" / "table3b_fusion.csv")
    assert list(csv[csv["source"] == "lvas"]["status"]) == ["missing"] * 3
    assert list(csv[csv["source"] == "paper"]["AP"]) == [34.5, 34.8, 36.0]


def test_latex_escaping():
    assert latex_escape("J&F 50% a_b") == r"J\&F 50\% a\_b"
    assert latex_escape("{5,4}") == r"\{5,4\}"


def test_synthetic_runs_get_kind_columns_and_no_paper_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "syn.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "syn", "base": str(ROOT / "experiments/cpu_small.yaml"), "metric": {"name": "AP"}, "method": "grid",
        "report": "table3a", "variants": [{"label": "Spatial", "overrides": {"model.mode": "spatial"}}]}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("syn")
    spec = load_sweep(sweep)
    with mlflow.start_run(tags={"sweep": "syn", "lvas_role": "sweep"}):
        with mlflow.start_run(nested=True, tags={**_tags(spec, "Spatial", None), "dataset": "synth"}):
            mlflow.log_metrics({"test/AP": 37.3, "test/motion/AP": 1.9, "test/appearance/AP": 72.7,
                                "test/motion/mIoU": 45.3, "test/appearance/mIoU": 83.0})
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["report", str(sweep), "--tracking-uri", uri, "--no-figures"]) == 0
    csv = pd.read_csv(tmp_path / "reports" / "syn" / "table3a_components.csv")
    assert list(csv["source"]) == ["lvas"]  # the paper's A2D figures are not comparable
    row = csv.iloc[0]
    assert (row["motion/AP"], row["appearance/AP"], row["motion/mIoU"]) == (1.9, 72.7, 45.3)
    md = (tmp_path / "reports" / "syn" / "table3a_components.md").read_text()
    assert "1 (no interval)" in md and "37.3 ±" not in md  # one seed: the value, and n = 1 said


def _latex_document(tables: list[Path]) -> str:
    return ("\\documentclass[twocolumn]{article}\n\\usepackage{booktabs,graphicx}\n\\begin{document}\n"
            + "".join(f"\\input{{{t}}}\n" for t in tables) + "\\end{document}\n")


def test_generated_latex_is_plain_ascii_and_balanced(store, tmp_path):
    """What pdflatex needs whatever the font encoding: no raw Unicode in the float, braces balanced."""
    sweep, uri, _ = store
    assert main(["report", str(sweep), "--tracking-uri", uri, "--out", str(tmp_path / "r"), "--no-figures"]) == 0
    from lvas.report.table4 import write_table4

    write_table4(tmp_path / "r", ROOT / "experiments")
    tables = sorted((tmp_path / "r").rglob("*.tex"))
    assert len(tables) >= 2
    for t in tables:
        body = "\n".join(line for line in t.read_text().splitlines() if not line.startswith("%"))
        assert body.isascii(), (t, [c for c in body if not c.isascii()][:5])
        assert body.count("{") == body.count("}") and re.search(r"\\end\{table\*?\}", body)


ARTIFACTS = ROOT / "test-artifacts"  # what a person looks at after a run (git-ignored)


def _compile(folder: Path, tables: list[Path], name: str) -> tuple[str, list[tuple[str, float]]]:
    """pdflatex a two-column article holding ``tables``; returns its log and each table's scale
    (line width / natural width, at most 1) from the ``lvas-table`` lines the floats write."""
    doc = folder / f"{name}.tex"
    doc.write_text(_latex_document(tables))
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=folder,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    log = (folder / f"{name}.log").read_text(errors="replace")
    scales = [(m.group(1), min(1.0, float(m.group(3)) / float(m.group(2))))
              for m in re.finditer(r"lvas-table (\S+): width=([\d.]+)pt, linewidth=([\d.]+)pt", log)]
    return log, scales


def test_generated_latex_compiles_in_a_two_column_paper_at_readable_size(store, tmp_path):
    """Every generated table (a sweep's, Table 4, the demo's under reports/) compiles in a two-column
    article with no overfull box and no table shrunk below 80 % of the text size; page 1 is rendered
    to test-artifacts/tables_two_column.png. With every column (--columns all) Table 3a would be
    shrunk below that: the measurement is real."""
    from tools import missing

    for tool in ("pdflatex", "pdftoppm"):
        if shutil.which(tool) is None:
            missing(f"{tool} not installed (texlive-latex-*, poppler-utils; .ci/run installs them)")
    sweep, uri, _ = store
    assert main(["report", str(sweep), "--tracking-uri", uri, "--out", str(tmp_path / "r"), "--no-figures"]) == 0
    from lvas.report.table4 import write_table4

    write_table4(tmp_path / "r", ROOT / "experiments")
    # and the tables committed under reports/ (the demo's, with their every-protocol tables)
    tables = sorted((tmp_path / "r").rglob("*.tex")) + sorted((ROOT / "reports").glob("*/*.tex"))
    assert len(tables) >= 4
    log, scales = _compile(tmp_path, tables, "doc")
    assert "Overfull \\hbox" not in log and "Missing character" not in log
    assert len(scales) == len(tables) and min(s for _, s in scales) >= 0.8, scales
    ARTIFACTS.mkdir(exist_ok=True)
    subprocess.run(["pdftoppm", "-png", "-r", "110", "-f", "1", "-l", "1", "-singlefile", str(tmp_path / "doc.pdf"),
                    str(ARTIFACTS / "tables_two_column")], check=True, timeout=120)
    from PIL import Image

    im = Image.open(ARTIFACTS / "tables_two_column.png").convert("L")
    assert im.size[0] > 800 and sum(1 for v in im.getdata() if v < 128) > 5000  # text on the page
    wide = tmp_path / "wide"
    assert main(["report", str(sweep), "--tracking-uri", uri, "--out", str(wide), "--no-figures", "--columns", "all"]) == 0
    _, all_scales = _compile(wide, [wide / "rep" / "table3a_components.tex"], "wide")
    assert all_scales[0][0] == "table3a_components" and all_scales[0][1] < 0.8, all_scales


def test_report_columns_option_picks_the_tex_columns(store, tmp_path, capsys):
    sweep, uri, _ = store
    assert main(["report", str(sweep), "--tracking-uri", uri, "--out", str(tmp_path / "r"), "--no-figures",
                 "--columns", "AP,mIoU"]) == 0
    tex = (tmp_path / "r" / "rep" / "table3a_components.tex").read_text()
    head = tex[tex.index(r"\toprule"):tex.index(r"\midrule")]
    assert "AP" in head and "mIoU" in head and "P@0.5" not in head and "oIoU" not in head
    assert "P@0.5" in (tmp_path / "r" / "rep" / "table3a_components.md").read_text()  # the .md keeps every column
    assert main(["report", str(sweep), "--tracking-uri", uri, "--out", str(tmp_path / "r2"), "--columns", "nosuch"]) == 2
    assert "--columns: nosuch not in the table" in capsys.readouterr().err


def test_the_index_measures_the_metric_gap_from_the_protocol_tables(tmp_path):
    """reports/README.md's metric-gap section: each row's COCO mAP against the AP it was scored with,
    read from the numbers of its *_protocols.csv."""
    from lvas.report.generate import write_index

    d = tmp_path / "rep" / "s"
    d.mkdir(parents=True)
    pd.DataFrame([
        {"row": "A", "protocol": "paper", "scored with": True, "n": 3, "AP": 60.0, "mAP": float("nan")},
        {"row": "A", "protocol": "coco", "scored with": False, "n": 3, "AP": 59.0, "mAP": 57.5},
        {"row": "B", "protocol": "lbdt", "scored with": True, "n": 2, "AP": 30.0, "mAP": float("nan")},
        {"row": "B", "protocol": "coco", "scored with": False, "n": 2, "AP": 30.0, "mAP": 31.0},
    ]).to_csv(d / "t_protocols.csv", index=False)
    (d / "t.md").write_text("x")
    text = write_index(tmp_path / "rep").read_text()
    assert "| s | A | 3 | 60.0 (`paper`) | 57.5 | -2.5 |" in text and "| s | B | 2 | 30.0 (`lbdt`) | 31.0 | +1.0 |" in text
    assert "-2.5 to +1.0 points" in text and "(either way)" in text and "at most 7 % of the +15.1" in text


def test_the_caption_says_dagger_where_the_body_marks_one():
    """A table whose best rows are not separated marks them with a dagger; its caption explains the
    dagger and must print one (it printed '?'), in the same form as the cells."""
    from lvas.report.tables import Marks, to_latex

    df = pd.DataFrame({"row": ["A", "B"], "AP": [30.0, 29.5]})
    tex = to_latex(df, "Table: x", marks=Marks("AP", tied=frozenset({0, 1}), note="†: not separated (α 0.05)."))
    caption = next(line for line in tex.splitlines() if line.startswith(r"\caption"))
    assert r"$^\dagger$: not separated ($\alpha$ 0.05)." in caption and "?" not in caption
    assert tex.count(r"$^\dagger$") == 3  # two cells and the caption
