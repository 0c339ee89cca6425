"""Fault injection and concurrency: kill -9 at random points of sweeps (1 and 2 workers) and of a
training, processes started together on a fresh store. Afterwards nothing is lost or duplicated, no
run is left RUNNING, and the report equals an uninterrupted sweep's."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import ViewType

ROOT = Path(__file__).resolve().parents[1]
TINY = {"data.frames": 4, "data.size": 48, "train.epochs": 3, "train.batch_size": 4, "data.workers": 0,
        "train.threads": 1, "tracking.system_metrics": False, "tracking.overlays": 0,
        "model.text.hidden": 16, "model.text.embed_dim": 8, "model.cmam.channels": 8, "model.decoder.channels": 8}


def write_sweep(folder: Path, synth: Path, name: str = "faults") -> Path:
    spec = {"name": name, "base": str(ROOT / "experiments" / "cpu_small.yaml"), "metric": {"name": "AP"},
            "report": "table3a", "seeds": 2, "overrides": {**TINY, "data.root": str(synth)},
            "variants": [{"label": "Spatial", "overrides": {"model.mode": "spatial"}},
                         {"label": "Temporal", "overrides": {"model.mode": "temporal"}}]}
    p = folder / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def lvas(*args: str, cwd: Path) -> subprocess.Popen:
    """``lvas ...`` in a new session (so that kill -9 reaches its workers too)."""
    return subprocess.Popen([sys.executable, "-m", "lvas.cli", *args], cwd=cwd, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(exps, max_results=1000) if exps else []


def report_numbers(sweep: Path, uri: str, out: Path) -> pd.DataFrame:
    """The report's table without the columns naming runs (those differ by construction)."""
    from lvas.report.generate import report_sweep
    from lvas.sweepspec import load_sweep

    res = report_sweep(load_sweep(sweep), uri, out, figures=False)
    csv = next(p for p in res["tables"] if p.suffix == ".csv")
    df = pd.read_csv(csv)
    return df[[c for c in df.columns if "run" not in c.lower()]]


def check_complete(folder: Path, sweep: Path, uri: str) -> int:
    """Every trial finished once, with its files; one FINISHED MLflow run each; nothing RUNNING.
    Returns how many trials were interrupted (killed while running) on the way."""
    from lvas.sweep.runner import SweepOptions, SweepRunner
    from lvas.sweepspec import load_sweep

    spec = load_sweep(sweep)
    runner = SweepRunner(spec, SweepOptions(out=str(folder / "sweeps"), tracking_uri=uri, progress=False))
    runner.open_study(sync_file=False)
    latest = runner.latest_by_id()
    assert sorted(latest) == sorted(t.id for t in spec.grid())
    assert {t.state.name for t in latest.values()} == {"COMPLETE"}
    runs = all_runs(uri)
    assert not [r for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    trials = [r for r in runs if r.data.tags.get("trial_id")]
    finished = [r.data.tags["trial_id"] for r in trials if r.info.status == "FINISHED"]
    assert sorted(finished) == sorted(latest), "a trial lost or run twice in MLflow"
    assert len(trials) == len(latest), f"duplicate child runs: {[(r.data.tags['trial_id'], r.info.status) for r in trials]}"
    for t in spec.grid():
        d = folder / "sweeps" / spec.name / "trials" / spec.folder(t)
        for f in ("test_metrics.json", "config.yaml", "model.pt", "history.json"):
            assert (d / f).is_file(), f"{t.name}: {f} missing"
    assert not list((folder / "sweeps").rglob(".*.lvas-tmp-*")), "temporary files of killed writes were left"
    return len([t for t in runner.study.trials() if t.user_attrs.get("interrupted")])


def wait_for_running_trial(out: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until some trial holds its folder (``.lock``) without having finished (no test metrics yet)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if any(not (lock.parent / "test_metrics.json").exists() for lock in out.rglob("trials/*/.lock")):
            return
        time.sleep(0.05)
    raise AssertionError("no trial started within the time allowed")


@pytest.fixture(scope="module")
def reference(synth, tmp_path_factory):
    """The uninterrupted sweep and its report."""
    folder = tmp_path_factory.mktemp("reference")
    sweep = write_sweep(folder, synth)
    uri = f"sqlite:///{folder / 'ml.db'}"
    proc = subprocess.run([sys.executable, "-m", "lvas.cli", "sweep", str(sweep), "--out", str(folder / "sweeps"),
                           "--tracking-uri", uri, "--quiet"], cwd=folder, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return report_numbers(sweep, uri, folder / "reports")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sweeps_killed_at_random_points_lose_and_duplicate_nothing(synth, tmp_path, reference, workers):
    rng = random.Random(workers)
    sweep = write_sweep(tmp_path, synth)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    args = ("sweep", str(sweep), "--out", str(tmp_path / "sweeps"), "--tracking-uri", uri, "--quiet",
            "--workers", str(workers))
    kills = 0
    for i in range(4):
        proc = lvas(*args, cwd=tmp_path)
        if i == 0:  # the first kill lands inside a trial whatever the machine's speed; the others anywhere
            wait_for_running_trial(tmp_path / "sweeps", proc)
            time.sleep(rng.uniform(0.2, 1.5))
        else:  # anywhere: start-up, a trial, between trials (short enough that a fast machine is still busy)
            time.sleep(rng.uniform(0.5, 4.0))
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills >= 2
    proc = lvas(*args, cwd=tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    interrupted = check_complete(tmp_path, sweep, uri)
    assert interrupted >= 1, "no kill landed inside a trial: the test proved nothing"
    pd.testing.assert_frame_equal(report_numbers(sweep, uri, tmp_path / "reports"), reference)


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_trial_resumed(synth, tmp_path, reference):
    """kill -9 of one worker (not the coordinator): the sweep finishes in the same command."""
    import psutil

    sweep = write_sweep(tmp_path, synth)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    proc = lvas("sweep", str(sweep), "--out", str(tmp_path / "sweeps"), "--tracking-uri", uri, "--quiet",
                "--workers", "2", cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline:
        kids = psutil.Process(proc.pid).children()
        # both workers inside a trial (a checkpoint written, no test score yet): the kill lands in one
        started = [d for d in (tmp_path / "sweeps" / "faults" / "trials").glob("*")
                   if (d / "last.pt").is_file() and not (d / "test_metrics.json").is_file()]
        if len(kids) == 2 and len(started) >= 2:
            break
        time.sleep(0.1)
    os.kill(kids[0].pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert "starting another" in err
    assert check_complete(tmp_path, sweep, uri) >= 1
    pd.testing.assert_frame_equal(report_numbers(sweep, uri, tmp_path / "reports"), reference)


def tiny_experiment(folder: Path, synth: Path, name: str) -> Path:
    p = folder / f"{name}.yaml"
    data = {"base": str(ROOT / "experiments" / "cpu_small.yaml"), "name": name}
    for k, v in {**TINY, "data.root": str(synth), "train.epochs": 2}.items():
        node = data
        *parents, leaf = k.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = v
    p.write_text(yaml.safe_dump(data))
    return p


def test_a_training_killed_before_its_first_checkpoint_is_rerun_in_the_same_mlflow_run(synth, tmp_path):
    """Rerun without --resume: the orphan RUNNING run is ended when the store is opened, then taken up."""
    exp = tiny_experiment(tmp_path, synth, "orphan")
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    args = ("train", str(exp), "--run-dir", str(tmp_path / "run"), "--tracking-uri", uri, "--quiet")
    proc = lvas(*args, cwd=tmp_path)
    deadline = time.time() + 120
    while not (tmp_path / "run" / "mlflow_run_id").is_file() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "last.pt").is_file()
    first = (tmp_path / "run" / "mlflow_run_id").read_text()
    assert MlflowClient(uri).get_run(first).info.status == "RUNNING"

    from lvas.tracking import _OPENED, open_store

    _OPENED.discard(uri)
    open_store(uri)  # what every lvas command does first
    run = MlflowClient(uri).get_run(first)
    assert run.info.status == "KILLED" and "is gone" in run.data.tags["lvas.end_reason"]

    proc = subprocess.run([sys.executable, "-m", "lvas.cli", *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = all_runs(uri)
    assert [r.info.run_id for r in runs] == [first] and runs[0].info.status == "FINISHED"
    assert "lvas.end_reason" not in runs[0].data.tags


def test_two_trainings_on_a_fresh_store_both_finish_and_one_folder_takes_one_training(synth, tmp_path):
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    a, b = tiny_experiment(tmp_path, synth, "a"), tiny_experiment(tmp_path, synth, "b")
    procs = [lvas("train", str(e), "--tracking-uri", uri, "--quiet", cwd=tmp_path) for e in (a, b)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-1500:] for r in results]
    assert sorted(r.info.status for r in all_runs(uri)) == ["FINISHED", "FINISHED"]

    # the same config twice at once: one trains, the other is refused with one line (never both in one folder)
    procs = [lvas("train", str(a), "--tracking-uri", uri, "--quiet", "--run-dir", str(tmp_path / "same"), cwd=tmp_path)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    refused = next(r[1] for p, r in zip(procs, results) if p.returncode == 2)
    assert "Traceback" not in refused
    assert "another training of this folder is running" in refused or "already holds a run" in refused
    assert sorted(r.info.status for r in all_runs(uri)) == ["FINISHED"] * 3


@pytest.mark.slow
def test_two_sweeps_started_together_on_a_fresh_store_both_finish(synth, tmp_path, reference):
    sweep = write_sweep(tmp_path, synth)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    procs = [lvas("sweep", str(sweep), "--out", str(tmp_path / "sweeps"), "--tracking-uri", uri, "--quiet",
                  cwd=tmp_path) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-1500:] for r in results]
    check_complete(tmp_path, sweep, uri)
    pd.testing.assert_frame_equal(report_numbers(sweep, uri, tmp_path / "reports"), reference)
