"""What the MLflow UI will show, read through a real `mlflow server` on loopback and its REST API
(the same calls the UI makes): experiment kind and description, the parent run's per-row metrics,
description and logged table, dataset inputs, a child's headline metrics, unused parameters,
overlay images and system metrics."""

import contextlib
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
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
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
    # the link `lvas sweep` printed (for `make ui` on port 5000), pointed at this server
    link = next(line.split(": ", 1)[1].split()[0] for line in printed.getvalue().splitlines()
                if line.startswith("MLflow UI (runs grouped by row): "))
    SERVER_LINK["link"] = link.replace("http://127.0.0.1:5000", base)
    yield base
    proc.terminate()
    proc.wait(10)


SERVER_LINK: dict[str, str] = {}


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


# ----------------------------------------------------------------------------- in a real browser
# Headless Chromium (Debian's chromium, driven by Playwright) on the same server: what a person sees.
# Screenshots go to test-artifacts/ (git-ignored); docs/mlflow_parent_run.png in the README is one.

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def page(server):
    import shutil

    from tools import missing, need_module

    sync_api = need_module("playwright.sync_api", "playwright not installed (pip install playwright)")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        missing("chromium not installed (apt-get install chromium; .ci/run installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1500, "height": 950})
        yield pg
        browser.close()


def _wait_text(pg, text: str, timeout: float = 60.0) -> str:
    end = time.time() + timeout
    body = ""
    while time.time() < end:
        body = pg.inner_text("body")
        if text in body:
            return body
        time.sleep(0.5)
    pg.screenshot(path=str(ARTIFACTS / "mlflow_timeout.png"))
    raise AssertionError(f"{text!r} not on the page within {timeout:.0f} s; it shows: {body[:600]!r}")


def test_the_printed_link_opens_on_the_rows_and_their_ap_without_a_click(page, runs):
    exp, _, children = runs
    link = SERVER_LINK["link"]
    assert f"#/experiments/{exp['experiment_id']}/runs?workflowType=machine_learning&viewStateShareKey=lvas" in link
    page.goto(link)
    body = _wait_text(page, "Group: add")
    page.screenshot(path=str(ARTIFACTS / "mlflow_first_screen.png"))
    assert "Group: Spatial" in body and "AP" in body.split("Group:")[0]  # the AP column, before the rows
    assert "Traces" not in body.split("Runs")[0] or "Model training" in body  # the runs page, not GenAI's overview
    for metric in ("AP", "mIoU"):  # each group shows its runs' mean (the tiny runs' AP may be 0)
        by_row: dict[str, list[float]] = {}
        for c in children:
            value = next(m["value"] for m in c["data"]["metrics"] if m["key"] == metric)
            by_row.setdefault(_tags(c["data"])["variant"], []).append(value)
        for label, values in by_row.items():
            mean = sum(values) / len(values)
            shown = "0 (average)" if mean == 0 else repr(mean)[:6]  # the UI prints JavaScript's shortest form
            assert shown in body, (metric, label, mean)


def test_parent_child_and_compare_pages(page, server, runs):
    exp, parent, children = runs
    eid, pid = exp["experiment_id"], parent["info"]["run_id"]
    page.goto(f"{server}/#/experiments/{eid}/runs/{pid}?workflowType=machine_learning")
    body = _wait_text(page, "Best row")
    for label in ("Spatial", "add"):
        assert f"AP/{label}" in body  # the parent's per-row metrics
    page.screenshot(path=str(ARTIFACTS / "mlflow_parent_run.png"), full_page=True)
    child = next(c for c in children if _tags(c["data"])["variant"] == "Spatial")
    page.goto(f"{server}/#/experiments/{eid}/runs/{child['info']['run_id']}?workflowType=machine_learning")
    body = _wait_text(page, "Row ")
    assert "(unused)" in body or "Parameters" in body
    page.screenshot(path=str(ARTIFACTS / "mlflow_child_run.png"), full_page=True)
    ids = [c["info"]["run_id"] for c in children]
    page.goto(f"{server}/#/compare-runs?runs={json.dumps(ids)}&experiments={json.dumps([eid])}")
    body = _wait_text(page, "seed")
    page.screenshot(path=str(ARTIFACTS / "mlflow_compare.png"), full_page=True)
    assert sum(1 for c in children if c["info"]["run_name"] in body) == len(children)
