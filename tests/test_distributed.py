"""Two `lvas sweep` processes ("machines") joining one study on a real PostgreSQL server and
logging to a real `mlflow server`, both on loopback."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from lvas.data.synthetic import generate
from services import MlflowServer, Postgres

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def servers(tmp_path):
    pg, ml = Postgres(), MlflowServer(tmp_path / "mlflow")
    try:
        yield pg.start(), ml.start()
    finally:
        ml.stop()
        pg.stop()


def test_two_machines_share_a_postgres_study_and_an_mlflow_server(tmp_path, servers):
    storage, tracking = servers
    synth = tmp_path / "synth"
    generate(synth, videos=10, frames=4, size=48, progress=False)
    tiny = {"data.root": str(synth), "data.frames": 4, "data.size": 48, "train.epochs": 1, "train.batch_size": 4,
            "data.workers": 0, "tracking.system_metrics": False, "tracking.overlays": 1,
            "model.text.hidden": 16, "model.text.embed_dim": 8, "model.cmam.channels": 8,
            "model.decoder.channels": 8}
    sweep = tmp_path / "dist.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "dist", "base": str(ROOT / "experiments/cpu_small.yaml"), "metric": {"name": "mIoU"},
        "method": "grid", "overrides": tiny, "parameters": {"train.lr": {"values": [0.001, 0.002]}},
        "variants": [{"label": "Spatial", "overrides": {"model.mode": "spatial"}},
                     {"label": "Temporal", "overrides": {"model.mode": "temporal"}}]}))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    machines = []
    for m in ("a", "b"):
        cwd = tmp_path / f"machine_{m}"
        cwd.mkdir()
        machines.append(subprocess.Popen(
            [sys.executable, "-m", "lvas.cli", "sweep", str(sweep), "--storage", storage, "--tracking-uri", tracking,
             "--quiet"], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in machines]
    assert [p.returncode for p in machines] == [0, 0], outputs
    for out in outputs:
        assert "database is locked" not in out and "Traceback" not in out
    study = optuna.load_study(study_name="dist", storage=storage)
    keys = [t.user_attrs["id"] for t in study.trials]
    assert len(keys) == 4 == len(set(keys)) and all(t.state.name == "COMPLETE" for t in study.trials)
    mlflow.set_tracking_uri(tracking)
    runs = mlflow.search_runs(experiment_names=["dist"])
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(children) == 4 and set(children["status"]) == {"FINISHED"}
    assert len(set(children["tags.mlflow.parentRunId"])) == 1
    run_id = children["run_id"].iloc[0]
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"config.yaml", "checkpoints", "images"} <= arts  # served by the tracking server (overlays: images/)
