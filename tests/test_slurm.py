"""A sweep on a real SLURM cluster (issue 22 §3): ``lvas sweep --launcher slurm --workers 2`` on a
one-machine cluster (munge, slurmctld, slurmd from Debian's packages; tests/cluster.py) submits a job
array through submitit whose tasks run the normal worker loop. Every trial runs once, one MLflow run
each, none left RUNNING, the parent run closed, the report equal to the same sweep run locally;
``--status`` reads the progress; the same command again resumes (nothing to do)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster import ClusterUnavailable, start_cluster
from tools import missing

ROOT = Path(__file__).resolve().parents[1]
LVAS = str(Path(sys.executable).with_name("lvas"))
TINY = {"data.frames": 4, "data.size": 48, "data.workers": 0, "train.epochs": 2, "train.batch_size": 4,
        "train.threads": 1, "tracking.system_metrics": False, "tracking.overlays": 0, "tracking.log_checkpoint": False,
        "model.text.hidden": 16, "model.text.embed_dim": 8, "model.cmam.channels": 8, "model.decoder.channels": 8}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        c = start_cluster(tmp_path_factory.mktemp("slurm-logs"))
    except ClusterUnavailable as e:
        missing(f"no SLURM cluster here: {e}")
    yield c
    c.stop()


def _lvas(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([LVAS, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def swept(cluster, synth, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slurm-sweep")
    sweep = tmp / "tiny.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "slurm_tiny", "base": str(ROOT / "experiments" / "cpu_small.yaml"), "metric": {"name": "AP"},
        "report": "ablation", "seeds": [0, 1], "overrides": {**TINY, "data.root": str(synth)},
        "variants": [{"label": "add", "overrides": {"model.fusion": "add"}},
                     {"label": "lgfs", "overrides": {"model.fusion": "lgfs"}}]}))
    common = ["--slurm", "gpus_per_node=0", "--slurm", "cpus_per_task=1", "--tracking-uri", f"sqlite:///{tmp / 'ml.db'}",
              "--out", str(tmp / "out")]
    p = _lvas("sweep", str(sweep), "--launcher", "slurm", "--workers", "2", "--wait", *common, cwd=tmp)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    local = _lvas("sweep", str(sweep), "--workers", "1", "--quiet", "--tracking-uri", f"sqlite:///{tmp / 'local.db'}",
                  "--out", str(tmp / "local"), cwd=tmp)
    assert local.returncode == 0, local.stderr[-2000:]
    return tmp, sweep, common, p


def _runs(uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    return [r for r in runs if "variant" in r.data.tags], [r for r in runs if "variant" not in r.data.tags]


def test_every_trial_runs_once_through_the_array(swept):
    tmp, _, _, p = swept
    assert "submitted SLURM array" in p.stdout and "4/4 trials done" in p.stdout
    trials, parents = _runs(f"sqlite:///{tmp / 'ml.db'}")
    keys = sorted((r.data.tags["variant"], r.data.tags.get("seed")) for r in trials)
    assert keys == sorted({("add", "0"), ("add", "1"), ("lgfs", "0"), ("lgfs", "1")})  # each once
    assert all(r.info.status == "FINISHED" for r in trials + parents)
    logs = sorted((tmp / "out" / "slurm_tiny" / "slurm").glob("*/*_log.out"))
    assert len(logs) == 2  # the two array tasks ran


def test_the_report_equals_the_local_sweeps(swept):
    tmp, sweep, _, _ = swept
    tables = {}
    for name, db in (("slurm", "ml.db"), ("local", "local.db")):
        r = _lvas("report", str(sweep), "--tracking-uri", f"sqlite:///{tmp / db}", "--out", str(tmp / f"rep-{name}"),
                  "--no-figures", cwd=tmp)
        assert r.returncode == 0, r.stderr[-2000:]
        (csv_path,) = [c for c in (tmp / f"rep-{name}" / "slurm_tiny").glob("*.csv") if "protocols" not in c.name]
        tables[name] = list(csv.DictReader(csv_path.open()))
    diff = [(k, a[k], b[k]) for a, b in zip(tables["slurm"], tables["local"]) for k in a if k != "runs" and a[k] != b[k]]  # run ids differ
    assert tables["slurm"] and len(tables["slurm"]) == len(tables["local"]) and not diff, diff[:6]


def test_status_and_resume(swept):
    tmp, sweep, common, _ = swept
    out = common[-1]
    s = _lvas("sweep", str(sweep), "--status", "--tracking-uri", common[-3], "--out", out, cwd=tmp)
    assert s.returncode == 0 and "4/4 trials done" in s.stdout and "SLURM: COMPLETED 2" in s.stdout, s.stdout + s.stderr
    again = _lvas("sweep", str(sweep), "--launcher", "slurm", "--workers", "2", *common, cwd=tmp)
    assert again.returncode == 0 and "nothing left to run" in again.stdout
    trials, _ = _runs(common[-3])
    assert len(trials) == 4


def test_a_bad_slurm_parameter_is_one_line(swept):
    tmp, sweep, common, _ = swept
    fresh = sweep.with_name("fresh.yaml")
    fresh.write_text(sweep.read_text().replace("slurm_tiny", "slurm_fresh"))
    p = _lvas("sweep", str(fresh), "--launcher", "slurm", "--slurm", "nonsense_key=1", *common[4:], cwd=tmp)
    assert p.returncode == 2 and "nonsense_key" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (Path(common[-1]) / "slurm_fresh" / "optuna.journal").exists()  # refused before anything was created
    p = _lvas("sweep", str(fresh), "--launcher", "slurm", "--slurm", "slurm_partition=nosuchpartition", *common[4:], cwd=tmp)
    assert p.returncode == 2 and "sbatch refused the array" in p.stderr and "Traceback" not in p.stderr, p.stderr
    p = _lvas("sweep", str(fresh), "--launcher", "slurm", "--slurm", "novalue", *common[4:], cwd=tmp)
    assert p.returncode == 2 and "--slurm 'novalue': expected key=value" in p.stderr
