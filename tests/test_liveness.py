"""Who is alive: the same-host rule (the process, not the heartbeat), other hosts by heartbeat,
heartbeats from a thread, orphan MLflow runs, temporary files of killed writes, names and secrets."""

import os
import subprocess
import sys
import time

import pytest

from lvas.liveness import HOST, Busy, Heartbeat, clean_tmp, exclusive, is_dead, process_start
from lvas.liveness import tmp_path as tmp_file_for


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_on_this_host_a_live_process_is_alive_however_old_its_heartbeat():
    me, start = os.getpid(), process_start()
    assert not is_dead(HOST, me, start, heartbeat=0.0, stale_after=1.0)  # an epoch of hours is not death
    assert is_dead(HOST, dead_pid(), None, heartbeat=time.time(), stale_after=600.0)  # gone at once
    assert is_dead(HOST, me, start - 1000.0, heartbeat=time.time())  # the pid now names another process


def test_on_another_host_only_the_heartbeat_counts():
    assert is_dead("elsewhere", 1, None, heartbeat=time.time() - 700, stale_after=600)
    assert not is_dead("elsewhere", 1, None, heartbeat=time.time() - 10, stale_after=600)
    assert not is_dead("elsewhere", 1, None, heartbeat=None)  # nothing to judge by: never taken over


def test_a_trial_beats_from_a_thread_while_its_work_blocks(tmp_path, synth):
    """The trial's heartbeat advances while the main thread is busy (one long epoch)."""
    import optuna
    import yaml

    from lvas.sweep.runner import SweepOptions, SweepRunner
    from lvas.sweepspec import load_sweep
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "beat", "base": str(root / "experiments" / "cpu_small.yaml"),
                                 "metric": {"name": "AP"}, "overrides": {"data.root": str(synth)}}))
    runner = SweepRunner(load_sweep(p), SweepOptions(out=str(tmp_path / "sw"), stale_after=1.0, progress=False,
                                                    tracking_uri=f"sqlite:///{tmp_path / 'ml.db'}"))
    runner.open_study()
    trial = runner.claim()
    assert runner.beat_every == 0.5
    trial.set_user_attr("heartbeat", 0.0)
    with Heartbeat(runner._beater(trial._trial_id), runner.beat_every):
        time.sleep(1.6)  # the "epoch": no callback, no heartbeat from this thread
    frozen = runner.study.optuna._storage.get_trial(trial._trial_id)
    assert time.time() - frozen.user_attrs["heartbeat"] < 1.0
    assert frozen.state == optuna.trial.TrialState.RUNNING


def test_a_second_holder_of_a_folder_is_refused_and_a_dead_one_never_blocks(tmp_path):
    with exclusive(tmp_path / ".lock"):
        code = ("from lvas.liveness import exclusive, Busy\n"
                f"try:\n    exclusive({str(tmp_path / '.lock')!r}).__enter__()\nexcept Busy as e:\n    print(e.owner)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        assert out.strip() == f"pid {os.getpid()} on {HOST}"
    # a holder killed with the lock held: the kernel drops the lock with the process
    p = subprocess.Popen([sys.executable, "-c", "from lvas.liveness import exclusive; import time\n"
                          f"cm = exclusive({str(tmp_path / '.lock')!r}); cm.__enter__(); print('held', flush=True); time.sleep(60)"],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    with pytest.raises(Busy):
        with exclusive(tmp_path / ".lock"):
            pass
    p.kill()
    p.wait()
    with exclusive(tmp_path / ".lock"):
        pass


def test_temporaries_of_killed_writes_are_removed_and_live_ones_kept(tmp_path):
    mine = tmp_path / f".model.pt.lvas-tmp-{HOST}-{os.getpid()}"
    killed = tmp_path / "sub" / f".last.pt.lvas-tmp-{HOST}-{dead_pid()}"
    other_host = tmp_path / ".x.lvas-tmp-otherhost-1"
    # the user's own files that merely look temporary are never lvas's to remove
    users = [tmp_path / f".notes.tmp-{HOST}-{dead_pid()}", tmp_path / ".draft.tmp-1", tmp_path / "x.lvas-tmp-a-1"]
    for f in (mine, killed, other_host, *users):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("half")
    assert tmp_file_for(tmp_path / "model.pt") == mine  # where lvas writes before renaming
    assert clean_tmp(tmp_path) == [killed]
    os.utime(other_host, (time.time() - 2 * 86400,) * 2)
    for f in users:
        os.utime(f, (time.time() - 2 * 86400,) * 2)
    assert clean_tmp(tmp_path) == [other_host]
    assert mine.is_file() and all(f.is_file() for f in users)


def test_a_failed_atomic_write_leaves_no_temporary(tmp_path):
    from lvas.liveness import replace_atomic

    def half(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        replace_atomic(tmp_path / "f.json", half)
    assert list(tmp_path.iterdir()) == []


def test_end_orphans_ends_dead_runs_only(tmp_path):
    """A RUNNING run of a dead process on this host is ended KILLED; a live one and a foreign run stay."""
    from mlflow import MlflowClient

    from lvas.tracking import PID_TAG, HOST_TAG, START_TAG, end_orphans

    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("x")
    dead = client.create_run(exp, tags={HOST_TAG: HOST, PID_TAG: str(dead_pid()), START_TAG: "1.0"}).info.run_id
    alive = client.create_run(exp, tags={HOST_TAG: HOST, PID_TAG: str(os.getpid()),
                                         START_TAG: str(process_start())}).info.run_id
    foreign = client.create_run(exp).info.run_id  # not started by lvas
    assert end_orphans(uri) == [dead]
    assert [client.get_run(r).info.status for r in (dead, alive, foreign)] == ["KILLED", "RUNNING", "RUNNING"]


@pytest.mark.parametrize("name,ok", [("table3a/Spatial+Temporal", True), ("cstm-r50_i3d", True), ("../x", False),
                                     ("a/../../b", False), ("/abs", False), ("a\\b", False), ("", False),
                                     ("tab\tname", False), ("..", False)])
def test_names_that_would_leave_their_folder_are_refused(name, ok):
    from lvas.config import ConfigError, from_dict, safe_name

    if ok:
        assert from_dict({"name": name}).name == name
    else:
        with pytest.raises(ConfigError, match="name:"):
            from_dict({"name": name})
    assert "/" not in safe_name(name) and not safe_name(name).startswith(".")


def test_a_claimed_trial_names_its_owner_at_once_and_a_half_named_one_is_judged(synth, tmp_path):
    """The CI failure of a kill -9 between writing a trial's host and its pid: such a trial looked alive
    forever. The claim now writes the whole owner in one storage call; a trial with no owner is
    abandoned after CLAIM_GRACE; one whose owner process is gone is dead at once."""
    import datetime

    import yaml

    from lvas.sweep import runner as runner_mod
    from lvas.sweep.runner import SweepOptions, SweepRunner
    from lvas.sweepspec import load_sweep
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "own", "base": str(root / "experiments" / "cpu_small.yaml"),
                                 "metric": {"name": "AP"}, "overrides": {"data.root": str(synth)}}))
    runner = SweepRunner(load_sweep(p), SweepOptions(out=str(tmp_path / "sw"), progress=False,
                                                    tracking_uri=f"sqlite:///{tmp_path / 'ml.db'}"))
    runner.open_study()
    trial = runner.claim()
    frozen = runner.study.optuna._storage.get_trial(trial._trial_id)
    assert frozen.user_attrs["owner"] == {"host": HOST, "pid": os.getpid(), "start": process_start()}
    assert not runner._dead(frozen)
    gone = frozen.user_attrs | {"owner": {"host": HOST, "pid": dead_pid(), "start": None}}
    assert runner._dead(type("T", (), {"user_attrs": gone, "datetime_start": frozen.datetime_start})())
    now = datetime.datetime.now()
    fresh = type("T", (), {"user_attrs": {}, "datetime_start": now})()
    old = type("T", (), {"user_attrs": {}, "datetime_start": now - datetime.timedelta(seconds=runner_mod.CLAIM_GRACE + 1)})()
    assert not runner._dead(fresh) and runner._dead(old)
