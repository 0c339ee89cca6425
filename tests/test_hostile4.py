"""Hostile and careless inputs, fourth round (issue 30), by class: code the user did not write never
runs; no secret is printed; nothing is lost or overwritten; nothing is left running; one clear line
instead of a traceback or silence. Each test failed on the code before the fix."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lvas.cli import main
from tests.test_faults import TINY, all_runs, write_sweep

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "hunter2-Sup3rSecret"


def one_error_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def tiny_experiment(folder: Path, synth: Path, **extra) -> Path:
    exp = folder / "tiny.yaml"
    over = {**TINY, "data.root": str(synth), "train.epochs": 1, **extra}
    data: dict = {"base": str(ROOT / "experiments" / "cpu_small.yaml")}
    for k, v in over.items():
        node = data
        *head, last = k.split(".")
        for h in head:
            node = node.setdefault(h, {})
        node[last] = v
    exp.write_text(yaml.safe_dump(data))
    return exp


def open_study(sweep: Path, out: Path, uri: str):
    """The sweep's study and parent run, created as `lvas sweep` creates them (no trial run)."""
    from lvas.sweep.runner import SweepOptions, SweepRunner
    from lvas.sweepspec import load_sweep

    runner = SweepRunner(load_sweep(sweep), SweepOptions(out=str(out), tracking_uri=uri, progress=False))
    runner.open_study()
    return runner


# --------------------------------------------------------------------------- code the user did not write


def test_a_journal_naming_imports_never_makes_status_or_a_resume_import_it(synth, tmp_path, capsys):
    """Item 1: a trial record appended to the Optuna journal with params {"imports": [payload.py]}."""
    marker = tmp_path / "PWNED"
    payload = tmp_path / "payload.py"
    payload.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    sweep, out, uri = write_sweep(tmp_path, synth), tmp_path / "sweeps", f"sqlite:///{tmp_path / 'ml.db'}"
    runner = open_study(sweep, out, uri)
    runner.study.enqueue({"variant": "Spatial"}, {"id": "forged", "point": "forged", "label": "Spatial", "seed": 0,
                                                  "params": json.dumps({"imports": [str(payload)]}),
                                                  "attempt": 0, "phase": "grid", "result_hash": "x"})
    assert main(["sweep", str(sweep), "--status", "--out", str(out), "--tracking-uri", uri, "-q"]) == 0
    assert not marker.exists()
    # a plain resume reads the same journal: the forged record is not one of the sweep's trials
    from lvas.sweep.runner import SweepOptions, SweepRunner
    from lvas.sweepspec import load_sweep

    again = SweepRunner(load_sweep(sweep), SweepOptions(out=str(out), tracking_uri=uri, progress=False))
    again.open_study()
    again.recover()
    assert not marker.exists()


def test_sweep_workers_never_import_from_the_working_directory(synth, tmp_path):
    """Item 2: ./mlflow.py in the folder `lvas sweep --workers 2` runs from."""
    marker = tmp_path / "IMPORTED"
    (tmp_path / "mlflow.py").write_text(f"open({str(marker)!r}, 'a').write('x')\nraise ImportError('planted')\n")
    spec = yaml.safe_load(write_sweep(tmp_path, synth).read_text())
    spec["overrides"]["train.epochs"] = 1
    spec["seeds"] = 1
    sweep = tmp_path / "faults.yaml"
    sweep.write_text(yaml.safe_dump(spec))
    p = subprocess.run([str(Path(sys.executable).with_name("lvas")), "sweep", str(sweep), "--workers", "2", "-q",
                        "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert not marker.exists(), "a worker imported ./mlflow.py"


def test_slurm_values_are_checked_before_a_job_script_is_written(synth, tmp_path, capsys):
    """Item 3: a value with a newline (a shell line in the job script), one with a space (another
    #SBATCH directive), and values of the wrong type: one line each, nothing created."""
    sweep = write_sweep(tmp_path, synth)
    out = tmp_path / "sweeps"
    for value, needle in [('slurm_comment=nightly\ntouch PWNED #', "slurm_comment: a newline"),
                          ("slurm_comment=x --output=/tmp/owned", "slurm_comment: 'x --output=/tmp/owned'"),
                          ("cpus_per_task=abc", "cpus_per_task: 'abc': expected an integer"),
                          ("mem_gb=lots", "mem_gb: 'lots': expected a number"),
                          ("timeout_min=[1]", "timeout_min: [1]: expected an integer")]:
        code = main(["sweep", str(sweep), "--launcher", "slurm", "--slurm", value, "--out", str(out), "-q"])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and needle in line, line
    assert not out.exists() and not (tmp_path / "PWNED").exists()


def test_a_video_named_like_an_ffmpeg_protocol_is_read_as_a_file(tmp_path, synth, capsys):
    """Item 4: `concat:inner.mp4` names a file, not FFmpeg's concat protocol over inner.mp4."""
    from tests.data_writers import write_mp4

    write_mp4(tmp_path / "inner.mp4", 4, 48, 64)
    planted = tmp_path / "concat:inner.mp4"
    planted.write_bytes(b"not a video at all")
    from lvas.engine.predict import iter_frames
    from lvas.errors import DataError

    os.chdir(tmp_path)
    with pytest.raises(DataError, match="cannot decode video"):
        list(iter_frames("concat:inner.mp4", 10**8))
    planted.write_bytes((tmp_path / "inner.mp4").read_bytes())  # the same name holding a real video is read
    assert len(list(iter_frames("concat:inner.mp4", 10**8))) == 4


# --------------------------------------------------------------------------- no secret printed


def test_a_password_in_the_tracking_uri_is_never_printed(synth, tmp_path):
    """Item 5: MLflow's "View run ... at: http://user:PASSWORD@host" lines, and lvas's own."""
    from tests.services import MlflowServer

    server = MlflowServer(tmp_path / "mlflow")
    try:
        uri = server.start().replace("http://", f"http://lvas:{PASSWORD}@")
        exp = tiny_experiment(tmp_path, synth)
        for quiet in ([], ["--quiet"]):
            p = subprocess.run([sys.executable, "-m", "lvas.cli", "train", str(exp), "--tracking-uri", uri,
                                "--run-dir", str(tmp_path / f"run{len(quiet)}"), *quiet], capture_output=True,
                               text=True, cwd=tmp_path, timeout=600)
            assert p.returncode == 0, p.stderr[-2000:]
            assert PASSWORD not in p.stdout + p.stderr
            assert "View run" not in p.stdout  # lvas prints the link it means; MLflow's carried the URI
    finally:
        server.stop()


def test_a_base_that_is_not_a_config_is_never_quoted(tmp_path, capsys):
    """Item 6: a base: naming a password file, a shadow-like file: the file and the line, no content."""
    (tmp_path / "secret.txt").write_text(f"db_password: {PASSWORD}\n")
    (tmp_path / "shadow.yaml").write_text("root:$6$Zx9QsaltsaltQ$hashhashhash:19000:0:99999:7:::\n")
    for base, needle in [("secret.txt", "base: 'secret.txt' is not an experiment YAML"),
                         ("shadow.yaml", "shadow.yaml: line 1: not a config key")]:
        exp = tmp_path / "e.yaml"
        exp.write_text(f"base: {base}\nname: x\n")
        for argv in (["config", str(exp)], ["train", str(exp)]):
            assert main(argv) == 2
            line = one_error_line(capsys.readouterr().err)
            assert needle in line and PASSWORD not in line and "$6$" not in line and "root:" not in line, line


# --------------------------------------------------------------------------- nothing lost or overwritten


@pytest.fixture(scope="module")
def trained(synth, tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    exp = tiny_experiment(folder, synth)
    assert main(["train", str(exp), "--run-dir", str(folder / "run"), "-q",
                 "--tracking-uri", f"sqlite:///{folder / 'ml.db'}"]) == 0
    return folder / "run" / "model.pt"


def test_eval_never_replaces_a_file_it_did_not_write_nor_writes_through_a_link(trained, synth, tmp_path, capsys):
    """Item 7: --submission over a checkpoint, --json and predict --out through planted links."""
    precious = tmp_path / "best_model.pt"
    precious.write_bytes(trained.read_bytes())
    before = precious.read_bytes()
    code = main(["eval", str(trained), "--submission", str(precious), "-q"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "exists and is not a file this command wrote" in line and precious.read_bytes() == before
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    link = tmp_path / "metrics.json"
    link.symlink_to(outside)
    assert main(["eval", str(trained), "--json", str(link), "-q"]) == 2
    assert "is a symbolic link" in one_error_line(capsys.readouterr().err) and outside.read_text() == "keep me"
    ours = tmp_path / "m.json"
    assert main(["eval", str(trained), "--json", str(ours), "-q"]) == 0
    assert main(["eval", str(trained), "--json", str(ours), "-q"]) == 0  # the same kind of file lvas wrote
    assert json.loads(ours.read_text())["protocol"] == "paper"
    out = tmp_path / "pred"
    out.mkdir()
    (out / "mask_00001.png").symlink_to(outside)
    (out / "overlay.gif").symlink_to(outside)
    frames = synth / "Release" / "frames" / sorted(os.listdir(synth / "Release" / "frames"))[0]
    assert main(["predict", str(trained), "--video", str(frames), "--query", "the thing", "--out", str(out), "-q"]) == 0
    assert outside.read_text() == "keep me"
    assert not (out / "mask_00001.png").is_symlink() and (out / "mask_00001.png").stat().st_size > 0


def test_two_sweep_files_with_one_name_are_kept_apart(synth, tmp_path, capsys):
    """Item 8: the second file with the same name: refused by sweep and report, the first's untouched."""
    uri, out = f"sqlite:///{tmp_path / 'ml.db'}", tmp_path / "sweeps"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_sweep(tmp_path / "a", synth)
    second = write_sweep(tmp_path / "b", synth)
    open_study(first, out, uri)
    code = main(["sweep", str(second), "--out", str(out), "--tracking-uri", uri, "-q"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and f"is the sweep of another file, {first.resolve()}" in line, line
    code = main(["report", str(second), "--tracking-uri", uri, "--out", str(tmp_path / "reports"), "--no-figures"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "is the sweep of another file" in line
    # the first file moved: it is the same sweep (its old path is gone)
    moved = tmp_path / "moved.yaml"
    first.rename(moved)
    runner = open_study(moved, out, uri)
    assert runner.study.attrs["sweep_file"] == str(moved.resolve())


def test_a_changed_config_in_a_failed_runs_folder_starts_a_new_run(synth, tmp_path, capsys):
    """Item 9: a run stops on a corrupt frame; rerun with data.skip_bad=true in the same folder (and
    again after deleting it): a new run, said so; the first keeps its failure."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth, data)
    frame = sorted((data / "Release" / "frames").rglob("*.jpg"))[0]
    frame.write_bytes(b"corrupt")
    exp = tiny_experiment(tmp_path, data)
    uri, run = f"sqlite:///{tmp_path / 'ml.db'}", tmp_path / "run"
    assert main(["train", str(exp), "--run-dir", str(run), "-q", "--tracking-uri", uri]) == 2
    assert "corrupt frame image" in one_error_line(capsys.readouterr().err)
    (first,) = all_runs(uri)
    reason = first.data.tags["failure"]
    assert first.info.status == "FAILED"
    assert main(["train", str(exp), "--run-dir", str(run), "-q", "--tracking-uri", uri, "data.skip_bad=true"]) == 0
    err = capsys.readouterr().err
    assert "recorded with another config" in err and "starts a new run" in err and "Traceback" not in err
    runs = {r.info.run_id: r for r in all_runs(uri)}
    assert len(runs) == 2 and runs[first.info.run_id].info.status == "FAILED"
    assert runs[first.info.run_id].data.tags["failure"] == reason
    shutil.rmtree(run)
    assert main(["train", str(exp), "--run-dir", str(run), "-q", "--tracking-uri", uri, "data.skip_bad=true",
                 "train.epochs=2"]) == 0
    assert len(all_runs(uri)) == 3


def test_status_of_a_sweep_that_never_ran_creates_nothing(synth, tmp_path, capsys):
    """Item 10: no store, no lock, no sweep folder."""
    sweep = write_sweep(tmp_path, synth)
    before = set(tmp_path.iterdir())
    code = main(["sweep", str(sweep), "--status", "--out", str(tmp_path / "sweeps"),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "has not started" in line
    assert set(tmp_path.iterdir()) == before


# --------------------------------------------------------------------------- nothing left running


def _ranks_started(proc, out: Path, timeout: float = 300.0) -> list:
    """The processes of a `lvas sweep --gpus-per-trial 2` once both ranks train and rank 0 has its
    MLflow run (the trial folder names it)."""
    import time

    import psutil

    def command(p) -> str:
        try:
            return " ".join(p.cmdline())
        except (psutil.Error, OSError):  # gone between listing and reading (a short-lived helper)
            return ""

    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        family = psutil.Process(proc.pid).children(recursive=True)
        ranks = [p for p in family if "train" in command(p) and "lvas.cli" in command(p)
                 and "torch.distributed.run" not in command(p)]
        if len(ranks) == 2 and list(out.rglob("trials/*/history.json")):  # an epoch done: both ranks in training
            return [proc.pid, *[p.pid for p in psutil.Process(proc.pid).children(recursive=True)]]
        time.sleep(0.2)
    raise AssertionError("the two ranks did not start")


@pytest.mark.parametrize("how", ["SIGTERM to the sweep", "Ctrl-C to its process group"])
def test_stopping_a_torchrun_sweep_ends_every_rank_and_every_run(synth, tmp_path, how):
    """Item 11: `lvas sweep --gpus-per-trial 2` stopped: no rank trains on, no run stays RUNNING."""
    import signal
    import time

    import psutil

    spec = yaml.safe_load(write_sweep(tmp_path, synth).read_text())
    spec.update(seeds=1, variants=[{"label": "Both", "overrides": {}}])
    spec["overrides"]["train.epochs"] = 50
    sweep = tmp_path / "faults.yaml"
    sweep.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "lvas.cli", "sweep", str(sweep), "--gpus-per-trial", "2", "-q",
                             "--tracking-uri", uri, "--out", str(tmp_path / "sweeps")], cwd=tmp_path,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    family = _ranks_started(proc, tmp_path / "sweeps")
    if how.startswith("SIGTERM"):
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == (143 if how.startswith("SIGTERM") else 130), err[-2000:]
    assert "Traceback" not in err
    time.sleep(0.5)
    alive = [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left alive: {[' '.join(psutil.Process(p).cmdline())[:120] for p in alive]}"
    runs = all_runs(uri)
    assert not [r for r in runs if r.info.status == "RUNNING"], [(r.info.run_name, r.info.status) for r in runs]
    assert {r.info.status for r in runs} == {"KILLED"} and len(runs) == 2  # the parent and the trial


from tests.test_signals import small_disk  # noqa: E402,F401  (a fixture: a 24 MiB tmpfs)


def test_a_full_disk_under_the_store_gives_one_line_and_the_run_ends_when_it_can(synth, tmp_path, small_disk,
                                                                                   monkeypatch):
    """Item 12: the disk that holds both the run folder and the SQLite store fills up during training."""
    import time

    monkeypatch.setenv("LVAS_CACHE", str(tmp_path / "cache"))  # where a run's end waits (not the full disk)
    exp = tiny_experiment(tmp_path, synth, **{"train.epochs": 4})
    uri, run = f"sqlite:///{small_disk / 'ml.db'}", small_disk / "run"
    proc = subprocess.Popen([sys.executable, "-m", "lvas.cli", "train", str(exp), "--run-dir", str(run), "-q",
                             "--tracking-uri", uri], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 300
    while not (run / "history.json").is_file() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    subprocess.run(["dd", "if=/dev/zero", f"of={small_disk / 'filler'}", "bs=1M", "count=64"], capture_output=True)
    _, err = proc.communicate(timeout=300)
    line = one_error_line(err)
    assert proc.returncode == 2 and str(small_disk) in line and "No space left on device" in line, line
    (small_disk / "filler").unlink()
    from lvas import tracking

    tracking._OPENED.discard(uri)
    tracking.open_store(uri)  # what every lvas command does first
    (r,) = all_runs(uri)
    assert r.info.status == "FAILED" and "No space left on device" in r.data.tags["failure"]


# --------------------------------------------------------------------------- one clear line


@pytest.mark.parametrize("body,entry,needle", [
    ("def broken(:\n", "bad.py", "bad.py: line 1: syntax error"),
    ("raise RuntimeError('plugin not ready')\n", "bad.py", "importing"),
    ("import not_installed_pkg_xyz\n", "bad.py", "imports 'not_installed_pkg_xyz', which is not installed"),
    ("", ".myplug", "'.myplug': not a module name"),
    ("", "json", "'json' registers no component: not a plugin"),
    ("from lvas.registry import FUSIONS\n@FUSIONS.register('add')\nclass Add:\n    pass\n", "bad.py",
     "fusion 'add' is already registered (by lvas.models"),
])
def test_a_plugin_that_cannot_be_imported_is_one_line(tmp_path, capsys, body, entry, needle):
    """Item 13: a syntax error, an exception at import, a missing package, a relative name, a module
    that registers nothing, a name lvas already has (naming the file that registers it again)."""
    (tmp_path / "bad.py").write_text(body)
    name = str(tmp_path / "bad.py") if entry == "bad.py" else entry
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump({"base": str(ROOT / "experiments" / "cpu_small.yaml"), "imports": [name]}))
    assert main(["config", str(exp)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "imports[0]" in line and needle in line, line
    if "already registered" in needle:
        assert f"{tmp_path / 'bad.py'} registers it again" in line
    if "raise RuntimeError" in body:
        assert "RuntimeError: plugin not ready (line 1 of" in line


def test_a_moved_project_evaluates_its_checkpoint_with_the_plugin_where_it_is_now(synth, tmp_path, capsys):
    """Item 13: a checkpoint made with plugins/x.py of a project since moved: --import of the file at its
    new place is the same plugin; without it the message says so in full (with the --import hint)."""
    import shutil

    old = tmp_path / "old"
    (old / "plugins").mkdir(parents=True)
    (old / "plugins" / "x.py").write_text(
        "import torch\nfrom lvas.registry import FUSIONS\n\n@FUSIONS.register('moved_sum')\n"
        "class MovedSum(torch.nn.Module):\n    def __init__(self, channels, text_channels):\n        super().__init__()\n"
        "    def forward(self, spatial, temporal, sentence):\n        return spatial + temporal\n")
    exp = tiny_experiment(old, synth, **{"model.fusion": "moved_sum"})
    data = yaml.safe_load(exp.read_text())
    data["imports"] = ["plugins/x.py"]
    exp.write_text(yaml.safe_dump(data))
    code = subprocess.run([sys.executable, "-m", "lvas.cli", "train", str(exp), "--run-dir", str(old / "run"), "-q",
                           "--tracking-uri", f"sqlite:///{old / 'ml.db'}"], cwd=old, capture_output=True, text=True)
    assert code.returncode == 0, code.stderr[-2000:]
    new = tmp_path / "new"
    shutil.move(old, new)
    ckpt = new / "run" / "model.pt"
    p = subprocess.run([sys.executable, "-m", "lvas.cli", "eval", str(ckpt), "-q"], cwd=new, capture_output=True,
                       text=True)
    line = one_error_line(p.stderr)
    assert p.returncode == 2 and "import them yourself (--import" in line and line.rstrip().endswith(")"), line
    p = subprocess.run([sys.executable, "-m", "lvas.cli", "eval", str(ckpt), "-q", "--import", "plugins/x.py",
                        f"data.root={synth}"], cwd=new, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]


def test_a_batch_smaller_than_the_processes_of_a_trial_is_refused_before_anything_starts(synth, tmp_path, capsys):
    """Item 14: train.batch_size=1 with --gpus-per-trial 2, also under --dry-run."""
    sweep = write_sweep(tmp_path, synth)
    for extra in (["--dry-run"], []):
        code = main(["sweep", str(sweep), "--gpus-per-trial", "2", "train.batch_size=1", "--out",
                     str(tmp_path / "sweeps"), *extra])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and line.startswith("lvas sweep: error: train.batch_size: 1") and "--gpus-per-trial 2" in line
    assert not (tmp_path / "sweeps").exists()


def test_an_empty_test_split_is_said_before_anything_runs(synth, tmp_path, capsys):
    """Item 15: eval (every protocol), data check and train on a set whose test split is empty."""
    import shutil

    import pandas as pd

    data = tmp_path / "data"
    shutil.copytree(synth, data)
    vs = data / "Release" / "videoset.csv"
    df = pd.read_csv(vs, header=None)
    df[8] = 0  # every video in the training split
    df.to_csv(vs, header=False, index=False)
    assert main(["data", "check", str(data), "--dataset", "synth"]) == 1
    assert "the test split has no samples" in capsys.readouterr().out
    exp = tiny_experiment(tmp_path, data)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    assert main(["train", str(exp), "--run-dir", str(tmp_path / "run"), "-q", "--tracking-uri", uri]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "data.test_split: the test split" in line and "has no samples" in line
    assert not (tmp_path / "run" / "last.pt").exists()
    ckpt_exp = tiny_experiment(tmp_path, synth)
    assert main(["train", str(ckpt_exp), "--run-dir", str(tmp_path / "ok"), "-q", "--tracking-uri", uri]) == 0
    capsys.readouterr()
    for protocol in ("coco", "paper"):
        code = main(["eval", str(tmp_path / "ok" / "model.pt"), f"data.root={data}", "--protocol", protocol,
                     "--json", str(tmp_path / f"{protocol}.json"), "-q"])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and "has no samples" in line and not (tmp_path / f"{protocol}.json").exists()


def test_mlflow_names_and_parents_that_cannot_be_are_one_line(synth, tmp_path, capsys):
    """Item 16: an experiment name too long for a store, an unknown parent run, '../../x' as a parent,
    and a 200-character sweep label (refused for its length, not for characters it does not have)."""
    exp = tiny_experiment(tmp_path, synth)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    for argv, needle in [(["--experiment-name", "e" * 600], "--experiment-name: 600 characters"),
                         (["--parent-run-id", "0" * 32], f"--parent-run-id {'0' * 32}: no such run"),
                         (["--parent-run-id", "../../x"], "'../../x' is not an MLflow run id")]:
        code = main(["train", str(exp), "--run-dir", str(tmp_path / "r"), "-q", "--tracking-uri", uri, *argv])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and needle in line, line
    spec = yaml.safe_load(write_sweep(tmp_path, synth).read_text())
    spec["variants"][0]["label"] = "L" * 200
    sweep = tmp_path / "long.yaml"
    sweep.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(sweep), "--dry-run"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "variants[0].label: 200 characters" in line and "at most 200" in line and "backslash" not in line, line


def test_a_tracking_server_that_does_not_answer_is_said_at_once(synth, tmp_path):
    """Item 17: the first line comes within seconds, names the server and the deadline; then one line."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    exp = tiny_experiment(tmp_path, synth)
    proc = subprocess.Popen([sys.executable, "-m", "lvas.cli", "train", str(exp), "-q", "--run-dir", str(tmp_path / "r"),
                             "--tracking-uri", f"http://u:{PASSWORD}@127.0.0.1:{port}"], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "LVAS_SERVER_WAIT": "6"})
    start = time.monotonic()
    first = proc.stderr.readline()
    assert time.monotonic() - start < 30 and "does not answer" in first and "retrying until" in first, first
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 2 and "did not answer for 6 s" in one_error_line(rest)
    assert PASSWORD not in first + rest


def test_reports_keep_long_labels_in_their_column_and_links_to_odd_names_whole(tmp_path):
    """Item 18: a 150-character label without a space compiles within the column; a sweep named
    abl#2 keeps its links in reports/README.md."""
    import shutil

    import pandas as pd

    from lvas.report.generate import write_index
    from lvas.report.tables import to_latex, write_table
    from tests.test_report import _compile

    df = pd.DataFrame({"row": ["X" * 150, "add"], "AP": [50.1, 49.0]})
    tex = tmp_path / "long.tex"
    tex.write_text(to_latex(df, caption="long", label="long"))
    if shutil.which("pdflatex"):
        log, scales = _compile(tmp_path, [tex], "doc")
        assert "Overfull \\hbox" not in log and scales[0][1] >= 0.8, scales
    else:
        from tools import missing

        missing("pdflatex not installed (texlive-latex-*; .ci/run installs them)")
    reports = tmp_path / "reports"
    write_table(df, reports / "abl#2", "methods", caption="x")
    index = write_index(reports).read_text()
    assert "(abl%232/methods.md)" in index and "(abl%232/methods.tex)" in index
