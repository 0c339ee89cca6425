"""The `make demo` pipeline (sweeps/quickstart.yaml + report) at a budget of seconds."""

from pathlib import Path

import mlflow
import yaml

from lvas.cli import main
from lvas.data.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    generate(tmp_path / "data" / "synth", videos=10, frames=4, size=48, progress=False)
    spec = yaml.safe_load((ROOT / "sweeps" / "quickstart.yaml").read_text())
    spec["base"] = str(ROOT / "experiments" / "cpu_small.yaml")
    spec["overrides"].update({"data.root": str(tmp_path / "data" / "synth"), "data.frames": 4, "data.size": 48,
                              "train.epochs": 1, "train.batch_size": 4, "data.workers": 0,
                              "tracking.overlays": 1, "model.text.hidden": 16, "model.decoder.channels": 8,
                              "model.cmam.channels": 8})
    spec["seeds"] = 2  # the demo's 3, cut for time; still an interval and a test per row
    sweep = tmp_path / "quickstart.yaml"
    sweep.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(sweep), "--quiet", "--workers", "2"]) == 0  # as `make demo` runs it
    assert main(["report", str(sweep)]) == 0
    labels = [v["label"] for v in spec["variants"]]
    # MLflow: one parent, one finished child per Table 3a row, each with its checkpoint
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["quickstart"])
    parent = runs[runs["tags.lvas_role"] == "sweep"]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(parent) == 1 and list(parent["status"]) == ["FINISHED"]
    assert sorted(children["tags.variant"]) == sorted(labels * 2) and set(children["status"]) == {"FINISHED"}
    assert sorted(children["tags.seed"]) == ["0"] * len(labels) + ["1"] * len(labels)
    client = mlflow.MlflowClient()
    for run_id in children["run_id"]:
        assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/model.pt"]
    trials = list((tmp_path / "runs" / "sweeps" / "quickstart" / "trials").glob("*/model.pt"))
    assert len(trials) == 2 * len(labels)
    # tables and figures, including the paper's Fig. 4 and Fig. 5
    out = tmp_path / "reports" / "quickstart"
    for suffix in (".md", ".tex", ".csv"):
        assert (out / f"table3a_components{suffix}").stat().st_size > 0
    import pandas as pd

    csv = pd.read_csv(out / "table3a_components.csv")
    ours = csv[csv["source"] == "lvas"].set_index("row")
    assert list(ours["n"]) == [2] * len(labels) and ours.loc["Spatial+Temporal", "Δ AP vs baseline"] == 0
    assert ours.drop("Spatial+Temporal")["p (seeds)"].between(0, 1).all()  # every other row tested against the baseline
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figs == ["ablation_bars.png", "fig4_qualitative.png", "fig5_cmam_words.png", "precision_iou.png",
                    "training_curves.png"]
    assert all((out / "figures" / f).stat().st_size > 5000 for f in figs)
    assert "quickstart/table3a_components.md" in (tmp_path / "reports" / "README.md").read_text()
    report_arts = {a.path for a in client.list_artifacts(parent["run_id"].iloc[0], "report/figures")}
    assert "report/figures/fig4_qualitative.png" in report_arts
