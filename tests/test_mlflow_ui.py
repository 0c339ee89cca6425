"""What the MLflow UI will show, read through a real `mlflow server` on loopback and its REST API
(the same calls the UI makes): experiment kind and description, the parent run's per-row metrics,
description and logged table, dataset inputs, a child's headline metrics, unused parameters,
overlay images and system metrics."""

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from PIL import Image

from lvas.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(synth, tmp_path_factory):
    w = tmp_path_factory.mktemp("ui")
    sweep = w / "ui_check.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "ui_check", "base": str(ROOT / "experiments" / "cpu_small.yaml"), "metric": {"name": "AP"},
        "description": "Spatial only against both streams, tiny", "seeds": 2,
        "overrides": {"data.root": str(synth), "train.epochs": 2, "data.size": 32, "data.frames": 4,
                      "train.limit_batches": 2, "tracking.overlays": 2, "tracking.system_metrics": True,
                      "model.decoder.channels": 8, "model.cmam.channels": 8},
        "variants": [{"label": "Spatial", "overrides": {"model.mode": "spatial"}},
                     {"label": "add", "overrides": {"model.fusion": "add"}}]}))
    db = w / "ml.db"
    env = {"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1", "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert main(["sweep", str(sweep), "--out", str(w / "out"), "--tracking-uri", f"sqlite:///{db}", "-q"]) == 0
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=w)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(base + "/health", timeout=2)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("mlflow server did not start")
            time.sleep(0.5)
    yield base
    proc.terminate()
    proc.wait(10)


def _get(base: str, endpoint: str, **query):
    url = f"{base}/api/2.0/mlflow/{endpoint}?" + urllib.parse.urlencode(query)
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


def _post(base: str, path: str, body: dict):
    req = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=10).read())


def _tags(entity: dict) -> dict:
    return {t["key"]: t["value"] for t in entity.get("tags", [])}


@pytest.fixture(scope="module")
def runs(server):
    exp = _get(server, "experiments/get-by-name", experiment_name="ui_check")["experiment"]
    found = _post(server, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
    parent = next(r for r in found if _tags(r["data"]).get("lvas_role") == "sweep")
    children = [r for r in found if r is not parent]
    return exp, parent, children


def test_experiment_opens_on_runs_and_is_described(runs):
    exp, _, _ = runs
    tags = _tags(exp)
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.note.content"] == "Spatial only against both streams, tiny"


def test_parent_run_shows_each_row_and_the_winner(server, runs):
    _, parent, children = runs
    metrics = {m["key"]: m["value"] for m in parent["data"].get("metrics", [])}
    for label in ("Spatial", "add"):
        mine = [c for c in children if _tags(c["data"]).get("variant") == label]
        aps = [next(m["value"] for m in c["data"]["metrics"] if m["key"] == "test/AP") for c in mine]
        assert len(aps) == 2 and metrics[f"AP/{label}"] == pytest.approx(sum(aps) / 2)  # mean over seeds
        assert f"mIoU/{label}" in metrics and f"oIoU/{label}" in metrics
    note = _tags(parent["data"])["mlflow.note.content"]
    best = max(("Spatial", "add"), key=lambda k: metrics[f"AP/{k}"])
    assert f"Best row: **{best}**" in note and "| row | seeds | AP |" in note
    assert _tags(parent["data"])["best_row"] == best
    files = [f["path"] for f in _get(server, "artifacts/list", run_id=parent["info"]["run_id"]).get("files", [])]
    assert "summary_table.json" in files


def test_children_name_their_inputs_headline_and_unused_params(server, runs):
    _, _, children = runs
    assert len(children) == 4
    for c in children:
        tags = _tags(c["data"])
        inputs = {d["dataset"]["name"]: d for d in c["inputs"]["dataset_inputs"]}
        assert {"synth/train", "synth/test"} <= set(inputs)
        assert all(len(d["dataset"]["digest"]) == 12 for d in inputs.values())
        keys = {m["key"] for m in c["data"]["metrics"]}
        assert {"AP", "mIoU", "oIoU", "test/AP"} <= keys
        assert not {k for k in keys if k.endswith("_skipped") or k.endswith("/n")}  # counters are not metrics
        assert any(k.startswith("system/") for k in keys)  # system metrics on
        params = {p["key"]: p["value"] for p in c["data"]["params"]}
        if tags["variant"] == "Spatial":
            assert params["model.fusion.name"] == "(unused)" and params["model.temporal.name"] == "(unused)"
        else:
            assert params["model.fusion.name"] == "add"
        assert tags["mlflow.note.content"].startswith(f"Row **{tags['variant']}**, seed ")
    # overlays: MLflow images, readable, the query written under the panels
    run_id = children[0]["info"]["run_id"]
    images = [f["path"] for f in _get(server, "artifacts/list", run_id=run_id, path="images").get("files", [])]
    pngs = [p for p in images if p.endswith(".png") and "overlay_00" in p]
    assert pngs, images
    url = f"{server}/get-artifact?" + urllib.parse.urlencode({"path": pngs[0], "run_uuid": run_id})
    im = Image.open(io.BytesIO(urllib.request.urlopen(url, timeout=10).read()))
    assert im.height >= 240 and im.width >= 3 * 240
