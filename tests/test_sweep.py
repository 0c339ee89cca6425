"""Sweeps: validation, expansion, resume after a kill, failure isolation, parallel workers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from lvas.cli import main
from lvas.engine.checkpoint import load_checkpoint
from lvas.config import ConfigError
from lvas.sweepspec import load_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = {"data.frames": 4, "data.size": 48, "train.epochs": 2, "train.batch_size": 4, "data.workers": 0,
        "tracking.system_metrics": False, "tracking.overlays": 0, "tracking.log_checkpoint": False,
        "model.text.hidden": 16, "model.text.embed_dim": 8, "model.cmam.channels": 8, "model.decoder.channels": 8}


def write_sweep(tmp_path, synth, name="tiny", **extra):
    spec = {"name": name, "base": str(ROOT / "experiments" / "cpu_small.yaml"), "metric": {"name": "AP"},
            "method": "grid", "report": "table3a", "overrides": {**TINY, "data.root": str(synth)},
            "variants": [{"label": "Spatial", "overrides": {"model.mode": "spatial"}},
                         {"label": "Temporal", "overrides": {"model.mode": "temporal"}}]}
    spec.update(extra)
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


@pytest.mark.parametrize("change,message", [
    ({"methd": "grid"}, "methd: unknown key"),
    ({"method": "hyperopt"}, "method: 'hyperopt' is not known"),
    ({"metric": {"name": "J&F"}}, "metric.name: 'J&F' is not known"),
    ({"parameters": {"train.lr": {"distribution": "uniform", "min": 0.1}}}, "parameters.train.lr.max: a number is required"),
    ({"parameters": {"train.lr": {"distribution": "uniform", "min": 0.1, "max": 1}}}, "grid sweeps need values"),
    ({"parameters": {"train.lr": {"distribution": "normal", "min": 0, "max": 1}}, "method": "random", "run_cap": 2},
     "parameters.train.lr.distribution: 'normal' is not known"),
    ({"method": "bayes"}, "run_cap: required for method bayes"),
    ({"variants": [{"label": "A", "overrides": {"model.fusoin": "add"}}]}, "trial 'A': model.fusoin: unknown key"),
    ({"variants": [{"label": "A"}, {"label": "A"}]}, "variants: labels must be unique"),
    ({"early_terminate": {"type": "asha"}}, "early_terminate.type: expected median or hyperband"),
    ({"base": "nope.yaml"}, "base: experiment file"),
])
def test_validation_errors_name_the_key(tmp_path, synth, change, message):
    with pytest.raises(ConfigError) as e:
        load_sweep(write_sweep(tmp_path, synth, **change))
    assert message in str(e.value)
    assert str(tmp_path) in str(e.value)


def test_grid_is_variants_times_parameter_values(tmp_path, synth, capsys):
    p = write_sweep(tmp_path, synth, parameters={"train.lr": {"values": [0.001, 0.01]},
                                                 "train.loss.pos_weight": {"value": 2.0}})
    spec = load_sweep(p)
    grid = spec.grid()
    assert [(t.label, t.params["train.lr"]) for t in grid] == [
        ("Spatial", 0.001), ("Spatial", 0.01), ("Temporal", 0.001), ("Temporal", 0.01)]
    cfg = spec.config_for(grid[3])
    assert (cfg.model.mode, cfg.train.lr, cfg.train.loss.pos_weight, cfg.data.size) == ("temporal", 0.01, 2.0, 48)
    assert len({t.id for t in grid}) == 4 and len({spec.folder(t) for t in grid}) == 4
    assert main(["sweep", str(p), "--dry-run"]) == 0
    assert "4 trial(s)" in capsys.readouterr().out


def test_every_shipped_sweep_validates():
    paths = sorted((ROOT / "sweeps").glob("*.yaml"))
    assert paths
    for p in paths:
        load_sweep(p)


def _runs(tracking_db, name):
    mlflow.set_tracking_uri(f"sqlite:///{tracking_db}")
    return mlflow.search_runs(experiment_names=[name])


def _study(out, name):
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(out / name / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def test_failing_trial_does_not_stop_the_others(tmp_path, synth, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    p = write_sweep(tmp_path, synth, name="failing", variants=[
        {"label": "Spatial", "overrides": {"model.mode": "spatial"}},
        {"label": "Broken", "overrides": {"data.root": str(tmp_path / "no-such-data")}},
        {"label": "Temporal", "overrides": {"model.mode": "temporal"}}])
    assert main(["sweep", str(p), "--quiet", "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "| FAIL" in out and out.count("| COMPLETE") == 2
    runs = _runs(tmp_path / "mlflow.db", "failing")
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert sorted(children["status"]) == ["FAILED", "FINISHED", "FINISHED"]
    parent = runs[runs["tags.lvas_role"] == "sweep"]
    assert list(parent["status"]) == ["FAILED"]
    broken = children[children["tags.variant"] == "Broken"]["run_id"].iloc[0]
    assert "no-such-data" in mlflow.artifacts.load_text(f"runs:/{broken}/traceback.txt")
    # rerun without --retry-failed: nothing runs again; with it, the failed point is retried
    assert main(["sweep", str(p), "--quiet", "--out", str(tmp_path / "out")]) == 1
    assert len(_study(tmp_path / "out", "failing").trials) == 3
    assert main(["sweep", str(p), "--quiet", "--out", str(tmp_path / "out"), "--retry-failed"]) == 1
    assert len(_study(tmp_path / "out", "failing").trials) == 4


def test_resume_after_the_runner_is_killed(tmp_path, synth):
    p = write_sweep(tmp_path, synth, name="killed", variants=[
        {"label": f"V{i}", "overrides": {"model.mode": m, "train.epochs": 3}}
        for i, m in enumerate(["spatial", "temporal", "spatial"])],
        parameters={"train.lr": {"values": [0.001]}})
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cmd = [sys.executable, "-m", "lvas.cli", "sweep", str(p), "--quiet", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True)
    # kill it once the second trial has written a checkpoint
    deadline = time.time() + 240
    while time.time() < deadline:
        done = list((tmp_path / "out" / "killed" / "trials").glob("*/last.pt"))
        if len(done) >= 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    study = _study(tmp_path / "out", "killed")
    states = sorted(t.state.name for t in study.trials)
    assert "RUNNING" in states and "COMPLETE" in states
    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "re-enqueued 1 interrupted" in rerun.stdout
    study = _study(tmp_path / "out", "killed")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["label"] for t in complete) == ["V0", "V1", "V2"]  # none lost, none duplicated
    runs = _runs(tmp_path / "mlflow.db", "killed")
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert sorted(children["tags.variant"]) == ["V0", "V1", "V2"]  # the interrupted trial kept its MLflow run
    assert set(children["status"]) == {"FINISHED"}
    hist = mlflow.MlflowClient().get_metric_history(
        children[children["tags.variant"] == complete[-1].user_attrs["label"]]["run_id"].iloc[0], "train_loss")
    assert sorted(m.step for m in hist) == [1, 2, 3]


def test_two_workers_share_one_study(tmp_path, synth, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    p = write_sweep(tmp_path, synth, name="parallel", parameters={"train.lr": {"values": [0.001, 0.002]}})
    assert main(["sweep", str(p), "--quiet", "--workers", "2", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "database is locked" not in err and "Traceback" not in err
    study = _study(tmp_path / "out", "parallel")
    keys = [t.user_attrs["id"] for t in study.trials]
    assert len(keys) == 4 == len(set(keys))
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    pids = {t.user_attrs["owner"]["pid"] for t in study.trials}
    assert len(pids) == 2  # both workers took trials
    runs = _runs(tmp_path / "mlflow.db", "parallel")
    assert (runs["tags.mlflow.parentRunId"].notna()).sum() == 4


def test_random_search_respects_run_cap(tmp_path, synth, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = write_sweep(tmp_path, synth, name="rand", method="random", run_cap=3,
                    overrides={**TINY, "data.root": str(synth), "train.select": "best_val"},
                    parameters={"train.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
                                "train.loss.pos_weight": {"distribution": "q_uniform", "min": 1, "max": 2, "q": 0.5}},
                    early_terminate={"type": "median", "min_iter": 1})
    assert main(["sweep", str(p), "--quiet", "--out", str(tmp_path / "out")]) == 0
    study = _study(tmp_path / "out", "rand")
    assert len(study.trials) == 3
    for t in study.trials:
        assert 1e-4 <= t.params["train.lr"] <= 1e-2 and t.params["train.loss.pos_weight"] in (1.0, 1.5, 2.0)
        assert t.params["variant"] in ("Spatial", "Temporal")
    # the search was told each trial's validation score of its selected epoch, never a test score
    val_scores = [load_checkpoint(f)["selected"]["val/AP"] for f in (tmp_path / "out" / "rand").rglob("model.pt")]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert complete and all(t.value in val_scores for t in complete)  # not vacuous: some trial completed


def test_evaluation_sweep_reuses_another_sweeps_checkpoint(tmp_path, synth, monkeypatch):
    """Table 2's pattern: evaluate Table 1's trained model (looked up by sweep and label)."""
    monkeypatch.chdir(tmp_path)
    train = write_sweep(tmp_path, synth, name="trainfirst",
                        variants=[{"label": "Spatial", "overrides": {"model.mode": "spatial"}}])
    evaluate = write_sweep(tmp_path, synth, name="evalonly",
                           overrides={**TINY, "data.root": str(synth), "model.mode": "spatial",
                                      "train.eval_only": True, "train.init_checkpoint": "sweep:trainfirst.yaml#Spatial"},
                           variants=[{"label": "Spatial", "overrides": {}}])
    assert main(["sweep", str(evaluate), "--quiet"]) == 1  # the checkpoint does not exist yet: a clear FAIL
    assert main(["sweep", str(train), "--quiet"]) == 0
    assert main(["sweep", str(evaluate), "--quiet", "--retry-failed"]) == 0
    trained = _study(tmp_path / "runs/sweeps", "trainfirst").best_trial.value
    evaluated = [t for t in _study(tmp_path / "runs/sweeps", "evalonly").trials if t.state.name == "COMPLETE"]
    assert evaluated[0].value == pytest.approx(trained)  # same model, same test split


def test_a_trial_on_two_processes_through_torchrun(tmp_path, synth, monkeypatch):
    """--gpus-per-trial 2: DistributedDataParallel through torchrun (gloo on this CPU machine)."""
    monkeypatch.chdir(tmp_path)
    p = write_sweep(tmp_path, synth, name="ddp", variants=[{"label": "Both", "overrides": {}}])
    assert main(["sweep", str(p), "--quiet", "--gpus-per-trial", "2"]) == 0
    (t,) = _study(tmp_path / "runs/sweeps", "ddp").trials
    assert t.state.name == "COMPLETE"
    runs = _runs(tmp_path / "mlflow.db", "ddp")
    child = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert list(child["status"]) == ["FINISHED"] and child["run_id"].iloc[0] == t.user_attrs["mlflow_run_id"]
    hist = mlflow.MlflowClient().get_metric_history(t.user_attrs["mlflow_run_id"], "train_loss")
    assert [m.step for m in hist] == [1, 2]  # logged once per epoch: only rank 0 tracks


def test_a_variant_may_start_from_another_methods_experiment():
    """sweeps/methods_synth.yaml: rows built from four YAML files, one registry, shared overrides on top."""
    from lvas.sweepspec import load_sweep

    spec = load_sweep(ROOT / "sweeps" / "methods_synth.yaml")
    cfgs = {t.label: spec.config_for(t) for t in spec.grid() if t.seed == 0}
    assert {k: c.model.decoder.name for k, c in cfgs.items()} == {"CSTM": "eq9", "ACGA": "acga", "LBDT": "lbdt",
                                                                 "ReferFormer": "referformer"}
    assert {k: c.train.protocol.name for k, c in cfgs.items()} == {"CSTM": "paper", "ACGA": "paper", "LBDT": "lbdt",
                                                                  "ReferFormer": "coco"}
    assert all(c.train.epochs == 8 and c.data.root == "data/synth" for c in cfgs.values())
    assert cfgs["LBDT"].model.bridge.stages == [4, 5] and cfgs["ACGA"].model.mode == "temporal"


def test_the_progress_line_names_the_stage_and_its_eta_counts_every_stage(monkeypatch):
    """A two-stage trial trains three networks: the line says which (epoch 3/8 of stage 2/3), and
    before any trial has finished the ETA follows the running trials' pace over all their stages."""
    import time
    from types import SimpleNamespace

    from optuna.trial import TrialState

    from lvas.sweep.progress import Progress

    now = 1000.0
    monkeypatch.setattr(time, "time", lambda: now)
    running = SimpleNamespace(state=TrialState.RUNNING, user_attrs={
        "label": "+LGFS", "seed": 0, "started": now - 100.0, "epoch": 3,
        "where": "stage 2/3 (temporal) epoch 3/8", "progress": 11 / 24})
    waiting = SimpleNamespace(state=TrialState.WAITING, user_attrs={"label": "+LGFS"})
    runner = SimpleNamespace(latest_by_id=lambda: {"a": running, "b": waiting}, is_current=lambda t: True,
                             spec=SimpleNamespace(name="q", seeds=SimpleNamespace(adaptive=False), top_k=0),
                             opts=SimpleNamespace(progress=False))
    p = Progress(runner)
    p.t0 = now - 200.0
    line = p.line()
    assert "running: +LGFS seed 0 stage 2/3 (temporal) epoch 3/8" in line
    # 100 s for 11 of 24 epochs: 218 s in all; 118 s left for it and 218 s for the waiting one
    whole = 100.0 / (11 / 24)
    assert f"ETA {int(round(whole - 100 + whole)) // 60}:{int(round(whole - 100 + whole)) % 60:02d}" in line
