"""SIGTERM (``kill``, ``timeout``, a scheduler's preemption) handled like Ctrl-C, and faults during
training (a locked store, a read-only run folder, a full disk): one line naming the cause, the MLflow
run ended with the reason, no temporary left, nothing recorded lost, and ``--resume`` finishes."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from tests.test_faults import (all_runs, check_complete, lvas, reference, report_numbers,  # noqa: F401  (fixture)
                               tiny_experiment, wait_for_running_trial, write_sweep)

ROOT = Path(__file__).resolve().parents[1]


def _wait_for(predicate, proc, timeout=180.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _one_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip() and not x.startswith("lvas: the MLflow store is locked")]
    assert "Traceback" not in err and len(lines) == 1, err[-2000:]
    return lines[0]


def test_sigterm_to_a_training_ends_its_run_killed_and_resume_finishes_it(synth, tmp_path):
    exp = tiny_experiment(tmp_path, synth, "term")
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    args = ("train", str(exp), "--run-dir", str(tmp_path / "run"), "--tracking-uri", uri, "--quiet",
            "train.epochs=30")
    rng = random.Random(3)
    proc = lvas(*args, cwd=tmp_path)
    assert _wait_for(lambda: (tmp_path / "run" / "mlflow_run_id").is_file(), proc)
    time.sleep(rng.uniform(0.5, 3.0))
    assert proc.poll() is None, "the training ended before the signal: the test would prove nothing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "terminated (SIGTERM)" in _one_line(err)
    run_id = (tmp_path / "run" / "mlflow_run_id").read_text()
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["lvas.end_reason"]
    assert not list(tmp_path.rglob(".*.lvas-tmp-*"))
    resume = ("--resume",) if (tmp_path / "run" / "last.pt").is_file() else ()
    done = subprocess.run([sys.executable, "-m", "lvas.cli", *args, *resume], cwd=tmp_path, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = all_runs(uri)
    assert [r.info.status for r in runs] == ["FINISHED"] and runs[0].info.run_id == run_id


@pytest.mark.slow
def test_sigterm_to_a_two_worker_sweep_stops_every_process_and_leaves_no_run_running(synth, tmp_path, reference):
    rng = random.Random(11)
    sweep = write_sweep(tmp_path, synth)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    args = ("sweep", str(sweep), "--out", str(tmp_path / "sweeps"), "--tracking-uri", uri, "--quiet",
            "--workers", "2")
    for i in range(2):
        proc = lvas(*args, cwd=tmp_path)
        if i == 0:
            wait_for_running_trial(tmp_path / "sweeps", proc)
        time.sleep(rng.uniform(0.5, 4.0))
        if proc.poll() is not None:
            break
        family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGTERM)  # to the coordinator only, as `kill PID` or a scheduler does
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 143, err[-2000:]
        assert "terminated (SIGTERM)" in err and "Traceback" not in err
        time.sleep(0.5)
        alive = [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"lvas processes left alive: {alive}"
        running = [r for r in all_runs(uri) if r.info.status == "RUNNING"]
        assert not running, [(r.info.run_name, r.data.tags.get("lvas_role")) for r in running]
        parent = [r for r in all_runs(uri) if r.data.tags.get("lvas_role") == "sweep"]
        assert [r.info.status for r in parent] == ["KILLED"] and "SIGTERM" in parent[0].data.tags["lvas.end_reason"]
    proc = lvas(*args, cwd=tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    check_complete(tmp_path, sweep, uri)
    import pandas as pd

    pd.testing.assert_frame_equal(report_numbers(sweep, uri, tmp_path / "reports"), reference)


def test_a_stop_while_the_parent_run_is_reopened_ends_it_killed(synth, tmp_path, monkeypatch):
    """A SIGTERM that lands while a coordinator reopens the sweep's parent run (status RUNNING set, its
    owner tags being written: the first second of a resumed sweep) ends the parent KILLED, as one that
    lands later does -- the case the two-worker SIGTERM test above once caught by chance."""
    from lvas import signals
    from lvas.cli import main
    from lvas.sweep import parent

    sweep = write_sweep(tmp_path, synth)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    real = parent.own

    def own_then_stopped(tracking_uri, run_id):
        real(tracking_uri, run_id)
        assert MlflowClient(tracking_uri).get_run(run_id).info.status == "RUNNING"
        raise signals.Terminated("SIGTERM")

    monkeypatch.setattr(parent, "own", own_then_stopped)
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "sweeps"), "--tracking-uri", uri, "--quiet"]) == 143
    runs = all_runs(uri)
    assert [(r.data.tags.get("lvas_role"), r.info.status) for r in runs] == [("sweep", "KILLED")]
    assert "SIGTERM" in runs[0].data.tags["lvas.end_reason"]


def test_a_store_locked_by_another_process_is_waited_for(synth, tmp_path):
    """Another process holds the SQLite store in an exclusive transaction for 8 s while a training
    writes to it: the training waits (one line) and finishes; with a shorter bound it stops with one
    line naming the cause, and --resume finishes once the store is free."""
    exp = tiny_experiment(tmp_path, synth, "locked")
    db = tmp_path / "ml.db"
    uri = f"sqlite:///{db}"
    args = ["train", str(exp), "--run-dir", str(tmp_path / "run"), "--tracking-uri", uri, "--quiet"]
    proc = lvas(*args, cwd=tmp_path)
    assert _wait_for(lambda: (tmp_path / "run" / "mlflow_run_id").is_file(), proc)
    hold = threading.Event()

    def lock_for(seconds: float, release: threading.Event | None = None) -> None:
        con = sqlite3.connect(db, timeout=30, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        hold.set()
        if release is None:
            time.sleep(seconds)
        else:  # held until the bounded training has given up (at most `seconds`)
            release.wait(seconds)
        con.execute("COMMIT")
        con.close()

    t = threading.Thread(target=lock_for, args=(8.0,))
    t.start()
    _, err = proc.communicate(timeout=300)
    t.join()
    assert hold.is_set() and proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    assert [r.info.status for r in all_runs(uri)] == ["FINISHED"]

    env = dict(os.environ, LVAS_STORE_WAIT="2")
    hold.clear()
    released = threading.Event()
    t = threading.Thread(target=lock_for, args=(60.0, released))
    t.start()
    hold.wait(30)
    bounded = subprocess.run([sys.executable, "-m", "lvas.cli", "train", str(exp), "--run-dir", str(tmp_path / "run2"),
                              "--tracking-uri", uri, "--quiet"], cwd=tmp_path, capture_output=True, text=True, env=env)
    released.set()
    t.join()
    assert bounded.returncode == 2
    assert "stayed locked by another process for 2 s (LVAS_STORE_WAIT)" in _one_line(bounded.stderr)


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs (the tests run as root in CI); removed afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        from tools import missing

        missing(f"mounting a tmpfs needs root: {proc.stderr.strip()[:200]}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_a_run_folder_that_stops_taking_writes_ends_in_one_line_and_resumes(synth, tmp_path, small_disk, fault):
    exp = tiny_experiment(tmp_path, synth, "disk")
    uri = f"sqlite:///{tmp_path / 'ml.db'}"  # the store stays on the normal disk
    run = small_disk / "run"
    args = ["train", str(exp), "--run-dir", str(run), "--tracking-uri", uri, "--quiet", "train.epochs=4"]
    proc = lvas(*args, cwd=tmp_path)
    assert _wait_for(lambda: (run / "history.json").is_file(), proc)  # epoch 1 checkpointed
    if fault == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    else:
        filler = small_disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=64"], capture_output=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-2000:]
    line = _one_line(err)
    cause = "Read-only file system" if fault == "read-only" else "No space left on device"
    assert str(run) in line and cause in line
    failed = all_runs(uri)[0]
    assert failed.info.status == "FAILED" and cause in failed.data.tags["failure"]
    assert not list(run.glob(".*.lvas-tmp-*"))
    if fault == "read-only":
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    else:
        filler.unlink()
    done = subprocess.run([sys.executable, "-m", "lvas.cli", *args, "--resume"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r.info.status for r in all_runs(uri)] == ["FINISHED"]


def test_a_row_inserted_at_the_same_moment_by_another_machine_is_written_again():
    """Two coordinators tag the one parent run at once: MLflow's upsert reads, then inserts, so the
    second insert fails with a unique violation (seen on PostgreSQL in CI); written again it updates."""
    from lvas.tracking import patiently

    calls = []

    def set_tag():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError('(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint '
                               '"tag_pk" [SQL: INSERT INTO tags ...] (Background on this error at: '
                               'https://sqlalche.me/e/21/gkpj)')
        return "written"

    assert patiently(set_tag) == "written" and len(calls) == 3

    def always():
        calls.append(1)
        raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: tags.key")

    calls.clear()
    with pytest.raises(RuntimeError, match="UNIQUE constraint"):
        patiently(always)
    assert len(calls) == 6  # a real conflict is not retried for ever
