"""Hostile and careless inputs, third round (issue 24): nothing lost or altered, no secret leaves the
machine. Our own cases for each class the review found."""

import shutil
import sqlite3
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from lvas.cli import main
from tests.data_writers import write_a2d

ROOT = Path(__file__).resolve().parents[1]
TINY = {"data": {"frames": 4, "size": 48, "workers": 0}, "train": {"batch_size": 4, "epochs": 1},
        "tracking": {"system_metrics": False, "overlays": 0, "log_checkpoint": False},
        "model": {"text": {"hidden": 16, "embed_dim": 8}, "cmam": {"channels": 8}, "decoder": {"channels": 8}}}
SECRET = "AKIAIOSFODNN7EXAMPLESECRETKEYwJalrXUtnFEMIK7MDENG"


def tiny_experiment(folder: Path, synth, **data) -> Path:
    exp = folder / "tiny.yaml"  # data.dataset may be given (a2d) beside the synthetic default
    exp.write_text(yaml.safe_dump({"base": str(ROOT / "experiments" / "cpu_small.yaml"),
                                   **{**TINY, "data": {**TINY["data"], "root": str(synth), **data}}}))
    return exp


def one_error_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- 1. data lost or altered


def test_prepare_refuses_a_clip_named_dot_dot_and_deletes_nothing(tmp_path, capsys):
    root = tmp_path / "a2d"
    write_a2d(root, n_frames=4, frames_as="mp4")
    clips = root / "Release" / "clips320H"
    shutil.copy(clips / "v_train.mp4", clips / "...mp4")  # its stem is '..': frames/.. is Release/ itself
    keep = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert main(["data", "prepare", "a2d", str(root), "-q"]) == 0
    out = capsys.readouterr()
    assert "skipped '...mp4': not a plain video id" in out.err and "extracting" not in out.err  # no bar under -q
    now = {p.relative_to(root) for p in root.rglob("*")}
    assert set(keep) <= now and (root / "Release" / "videoset.csv").is_file()
    assert not (root / "Release" / "frames" / "..").resolve().samefile(root) or (root / "Release").is_dir()


def test_prepare_never_removes_a_folder_it_did_not_complete(tmp_path, capsys):
    root = tmp_path / "a2d"
    write_a2d(root, n_frames=4, frames_as="mp4")
    mine = root / "Release" / "frames" / "v_train"
    mine.mkdir(parents=True)
    (mine / "my_notes.txt").write_text("mine")
    assert main(["data", "prepare", "a2d", str(root), "-q"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "frames/v_train: exists but was not completed by lvas" in line
    assert (mine / "my_notes.txt").read_text() == "mine"


def test_prepare_an_audio_only_clip_names_it_and_leaves_nothing_half_written(tmp_path, capsys):
    import av
    import numpy as np

    root = tmp_path / "a2d"
    write_a2d(root, n_frames=4, frames_as="mp4")
    bad = root / "Release" / "clips320H" / "v_audio.mp4"
    with av.open(str(bad), "w") as c:
        s = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.rate = 8000
        for packet in [*s.encode(frame), *s.encode(None)]:
            c.mux(packet)
    assert main(["data", "prepare", "a2d", str(root), "-q"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "v_audio.mp4: has no video stream" in line
    assert not list((root / "Release" / "frames").glob(".*partial*"))


def test_report_from_the_wrong_store_keeps_the_good_tables(tmp_path, capsys):
    from tests.test_report import write_store

    sweep, uri, _ = write_store(tmp_path)
    out = tmp_path / "reports"
    assert main(["report", str(sweep), "--tracking-uri", uri, "--out", str(out), "--no-figures", "-q"]) == 0
    good = {p.name: p.read_bytes() for p in (out / "rep").glob("table3a*")}
    other = tmp_path / "other.db"
    from lvas.tracking import open_store

    open_store(f"sqlite:///{other}")  # a store without this sweep's runs
    capsys.readouterr()
    assert main(["report", str(sweep), "--tracking-uri", f"sqlite:///{other}", "--out", str(out), "--no-figures",
                 "-q"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "table3a_components.csv: holds 2 finished row(s)" in line and "--force" in line
    assert {p.name: p.read_bytes() for p in (out / "rep").glob("table3a*")} == good
    # a store that does not exist is named, not created
    assert main(["report", str(sweep), "--tracking-uri", f"sqlite:///{tmp_path / 'typo.db'}", "--out", str(out),
                 "-q"]) == 2
    assert not (tmp_path / "typo.db").exists()
    # --force replaces it, and the every-protocol table of the earlier report goes with it
    (out / "rep" / "table3a_components_protocols.md").write_text("old")
    assert main(["report", str(sweep), "--tracking-uri", f"sqlite:///{other}", "--out", str(out), "--no-figures",
                 "-q", "--force"]) == 1
    assert not (out / "rep" / "table3a_components_protocols.md").exists()


def test_a_copied_run_folder_forks_instead_of_writing_into_the_original_run(tmp_path, synth, capsys):
    exp = tiny_experiment(tmp_path, synth)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", str(exp), "--run-dir", str(a), "-q", "--tracking-uri", uri]) == 0
    run_a = (a / "mlflow_run_id").read_text().strip()
    client = mlflow.MlflowClient(uri)
    before = (client.get_run(run_a).data, [m.value for m in client.get_metric_history(run_a, "train_loss")])
    shutil.copytree(a, b)
    assert main(["train", str(exp), "--run-dir", str(b), "-q", "--resume", "--tracking-uri", uri]) == 0
    run_b = (b / "mlflow_run_id").read_text().strip()
    assert run_b != run_a
    after = client.get_run(run_a).data
    assert after.tags == before[0].tags and after.metrics == before[0].metrics
    assert [m.value for m in client.get_metric_history(run_a, "train_loss")] == before[1]
    fork = client.get_run(run_b)
    assert fork.data.tags["forked_from"] == run_a and fork.data.tags["run_dir"] == str(b.resolve())


def test_a_key_written_twice_is_refused_naming_it_and_both_lines(tmp_path, capsys):
    f = tmp_path / "e.yaml"
    f.write_text(f"base: {ROOT / 'experiments' / 'cpu_small.yaml'}\ntrain:\n  epochs: 2\n  lr: 0.1\n  epochs: 5\n")
    assert main(["config", str(f)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(f) in line and "key 'epochs' is written twice (lines 3 and 5)" in line


def test_labels_with_a_pipe_or_non_ascii_keep_tables_whole(tmp_path):
    from lvas.report.tables import write_table

    df = pd.DataFrame({"row": ["a | b", "Résumé 🙂"], "AP": [1.0, 2.0]})
    md, tex, _ = write_table(df, tmp_path, "t", "caption ± Δ")
    rows = [x for x in md.read_text().splitlines() if x.startswith("|")]
    assert len({x.replace("\\|", "").count("|") for x in rows}) == 1 and r"a \| b" in rows[2]
    assert tex.read_text().isascii() and "Resume ?" in tex.read_text()


# --------------------------------------------------------------------------- 2. secrets


def test_an_annotation_linked_to_a_credentials_file_is_not_quoted_or_tracked(tmp_path, synth, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the store's artifacts go under it
    data = tmp_path / "data"
    shutil.copytree(synth, data)
    secret = tmp_path / "credentials"
    secret.write_text(f"aws_secret_access_key={SECRET}\n")
    ann = data / "text_annotations" / "a2d_annotation.txt"
    ann.unlink()
    ann.symlink_to(secret)
    exp = tiny_experiment(tmp_path, data)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    assert main(["train", str(exp), "--run-dir", str(tmp_path / "run"), "-q", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "a2d_annotation.txt: line 1: the header must name video_id,instance_id,query" in err
    assert SECRET not in err and SECRET[:16] not in err
    con = sqlite3.connect(tmp_path / "ml.db")
    stored = " ".join(str(v) for (v,) in con.execute("SELECT value FROM tags"))
    assert SECRET[:8] not in stored and "aws_secret" not in stored
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cpu_small").experiment_id])
    assert run.info.status == "FAILED" and "a2d_annotation.txt: line 1: the header must name" in run.data.tags["failure"]
    tb = Path(client.download_artifacts(run.info.run_id, "traceback.txt", str(tmp_path))).read_text()
    assert "a2d_annotation.txt: line 1: the header must name" in tb and SECRET[:8] not in tb and "aws_secret" not in tb


def test_a_planted_symlink_in_the_report_folder_is_never_uploaded_or_followed(tmp_path):
    from tests.test_report import write_store

    sweep, uri, parent = write_store(tmp_path)
    out = tmp_path / "reports"
    (out / "rep").mkdir(parents=True)
    key = tmp_path / "id_rsa"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n" + SECRET + "\n")
    (out / "rep" / "notes.md").symlink_to(key)
    (out / "rep" / "table3a_components.md").symlink_to(key)  # at a name lvas writes
    assert main(["report", str(sweep), "--tracking-uri", uri, "--out", str(out), "--no-figures", "-q"]) == 0
    assert SECRET in key.read_text()  # the link was replaced, its target not written through
    assert not (out / "rep" / "table3a_components.md").is_symlink()
    client = mlflow.MlflowClient(uri)
    uploaded = {a.path for a in client.list_artifacts(parent, "report")}
    assert "report/table3a_components.md" in uploaded and "report/notes.md" not in uploaded


# --------------------------------------------------------------------------- 4. messages that name the key or file


@pytest.mark.parametrize("body,needle", [
    ("name: x\nmodel: " + "[" * 3000 + "]" * 3000 + "\n", "nested"),
    ("name: \xe9t\xe9\n", "not UTF-8 text"),
])
def test_deep_or_undecodable_yaml_names_the_file(tmp_path, capsys, body, needle):
    f = tmp_path / "e.yaml"
    f.write_bytes(body.encode("latin-1"))
    assert main(["config", str(f)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(f) in line and needle in line


def test_a_long_or_undecodable_base_chain_names_the_file(tmp_path, capsys):
    for i in range(40):
        (tmp_path / f"b{i}.yaml").write_text(f"base: b{i + 1}.yaml\n" if i < 39 else "name: end\n")
    assert main(["config", str(tmp_path / "b0.yaml")]) == 2
    assert "a chain of more than 32 files" in one_error_line(capsys.readouterr().err)
    (tmp_path / "latin.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (tmp_path / "child.yaml").write_text("base: latin.yaml\n")
    assert main(["config", str(tmp_path / "child.yaml")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "latin.yaml: not UTF-8 text" in line


@pytest.mark.parametrize("override,needle", [
    ("train.batch_size=10000000000000000000", "train.batch_size: 10000000000000000000 is out of range"),
    ("seed=1000000000000000000000000000000", "seed: 1000000000000000000000000000000 is out of range"),
    ("train.optimizer.weight_decay=-0.1", "train.optimizer.weight_decay: -0.1 is not valid; expected a number >= 0"),
])
def test_out_of_range_numbers_are_refused_before_any_run_is_recorded(tmp_path, synth, capsys, override, needle):
    exp = tiny_experiment(tmp_path, synth)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    assert main(["train", str(exp), override, "-q", "--tracking-uri", uri, "--run-dir", str(tmp_path / "r")]) == 2
    assert needle in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "ml.db").exists() or not mlflow.MlflowClient(uri).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(uri).search_experiments()])


@pytest.mark.parametrize("extra,needle", [
    ({"seed": [1]}, "seed: [1]: expected an integer"),
    ({"seed": "abc"}, "seed: 'abc': expected an integer"),
    ({"early_terminate": {"type": "median", "min_iter": "abc"}}, "early_terminate.min_iter: 'abc': expected an integer"),
    ({"seeds": 10**8}, "seeds: 100000000: expected a count from 1 to 1000"),
])
def test_sweep_keys_are_checked_by_a_dry_run(tmp_path, synth, capsys, extra, needle):
    from tests.test_sweep import write_sweep

    p = write_sweep(tmp_path, synth, **extra)
    assert main(["sweep", str(p), "--dry-run"]) == 2
    assert needle in one_error_line(capsys.readouterr().err)


def _a2d_with(tmp_path, change) -> Path:
    root = tmp_path / "a2d"
    write_a2d(root)
    change(root)
    return root


def _train_line(tmp_path, root, capsys) -> str:
    exp = tiny_experiment(tmp_path, root, dataset="a2d")
    assert main(["train", str(exp), "-q", "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}",
                 "--run-dir", str(tmp_path / "r")]) == 2
    return one_error_line(capsys.readouterr().err)


def _string_ids(root: Path) -> None:
    import h5py

    h5 = next((root / "text_annotations" / "a2d_annotation_with_instances" / "v_train").glob("*.h5"))
    with h5py.File(h5, "r+") as f:
        del f["instance"]
        f.create_dataset("instance", data=np.array([b"one"]))


def _float_text_mask(root: Path) -> None:
    import h5py

    h5 = next((root / "text_annotations" / "a2d_annotation_with_instances" / "v_train").glob("*.h5"))
    with h5py.File(h5, "r+") as f:
        shape = f["reMask"].shape
        del f["reMask"]
        f.create_dataset("reMask", data=np.full(shape, b"x", dtype="S1"))


def _odd_frame(root: Path) -> None:
    from PIL import Image

    Image.new("RGB", (20, 30)).save(root / "Release" / "frames" / "v_train" / "00003.jpg")


def _empty_query(root: Path) -> None:
    ann = root / "text_annotations" / "a2d_annotation.txt"
    ann.write_text(ann.read_text() + "v_train,1,?!\n")


@pytest.mark.parametrize("change,needle,check_needle", [
    (_string_ids, "'instance' must hold the annotated instance ids as numbers", None),
    (_float_text_mask, "'reMask' must be a 2-D or 3-D array of numbers", None),
    (_odd_frame, "frame of 20x30 pixels; this video's frames are 64x48", None),
    (_empty_query, "a2d_annotation.txt: 1 query has no words (the first at row", None),
])
def test_data_check_finds_what_training_trips_on(tmp_path, capsys, change, needle, check_needle):
    root = _a2d_with(tmp_path, change)
    assert needle in _train_line(tmp_path, root, capsys)
    assert main(["data", "check", str(root), "--dataset", "a2d"]) == 1
    assert (check_needle or needle) in capsys.readouterr().out


def test_a_model_pt_copied_over_last_pt_is_refused_on_resume(tmp_path, synth, capsys):
    exp = tiny_experiment(tmp_path, synth)
    args = ["train", str(exp), "-q", "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}", "--run-dir", str(tmp_path / "r")]
    assert main(args) == 0
    shutil.copy(tmp_path / "r" / "model.pt", tmp_path / "r" / "last.pt")
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    assert "last.pt: not a resumable checkpoint (it has no 'optimizer'" in one_error_line(capsys.readouterr().err)


def test_a_one_pixel_video_is_predicted_or_refused_in_one_line(tmp_path, synth, capsys):
    from PIL import Image

    exp = tiny_experiment(tmp_path, synth)
    assert main(["train", str(exp), "-q", "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}",
                 "--run-dir", str(tmp_path / "r")]) == 0
    (tmp_path / "tiny").mkdir()
    for i in range(3):
        Image.new("RGB", (1, 1), (i * 80, 0, 0)).save(tmp_path / "tiny" / f"{i:03d}.png")
    capsys.readouterr()
    rc = main(["predict", str(tmp_path / "r" / "model.pt"), "--video", str(tmp_path / "tiny"), "--query", "the cat",
               "--out", str(tmp_path / "out"), "--mp4", "-q"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if rc == 0:
        assert len(list((tmp_path / "out").glob("mask_*.png"))) == 3 and (tmp_path / "out" / "overlay.gif").is_file()
    else:
        assert rc == 2 and len(err.strip().splitlines()) == 1


def test_a_truncated_journal_line_is_dropped_and_a_damaged_one_named(tmp_path, synth, capsys, monkeypatch):
    """A process killed while appending to the Optuna journal leaves its last line cut short: the next
    command drops it (nothing it held was ever complete) and goes on; a damaged line inside the
    journal stops the sweep with one line naming the file, before a second parent run is made."""
    from tests.test_sweep import write_sweep

    monkeypatch.chdir(tmp_path)
    p = write_sweep(tmp_path, synth, name="journal")
    out = tmp_path / "out"
    assert main(["sweep", str(p), "-q", "--out", str(out)]) == 0
    journal = out / "journal" / "optuna.journal"
    good = journal.read_bytes()
    journal.write_bytes(good + b'{"op_code": 5, "worker_id": "x", "trial_id": 0, "us')  # a kill mid-line
    capsys.readouterr()
    assert main(["sweep", str(p), "-q", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "dropped an unfinished last line" in err and "Traceback" not in err
    assert journal.read_bytes().startswith(good) and journal.read_bytes().endswith(b"\n")
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:3] + [b'{"op_code": 5, "worker\n'] + lines[3:]))  # damage inside
    assert main(["sweep", str(p), "-q", "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(journal) in line and "not valid JSON" in line
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("journal").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len([r for r in runs if r.data.tags.get("lvas_role") == "sweep"]) == 1


# --------------------------------------------------------------------------- 7. smaller


def test_eval_of_a_run_id_leaves_no_temporary_copy_and_no_bar_under_quiet(tmp_path, synth, capsys, monkeypatch):
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    tempfile.tempdir = None  # re-read TMPDIR
    exp = tiny_experiment(tmp_path, synth)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    assert main(["train", str(exp), "tracking.log_checkpoint=true", "-q", "--tracking-uri", uri, "--run-dir",
                 str(tmp_path / "r")]) == 0
    run_id = (tmp_path / "r" / "mlflow_run_id").read_text().strip()
    capsys.readouterr()
    assert main(["eval", run_id, "--tracking-uri", uri, "-q"]) == 0
    assert main(["eval", "0123456789abcdef0123456789abcdef", "--tracking-uri", uri, "-q"]) == 2
    err = capsys.readouterr().err
    assert "Downloading artifacts" not in err and "%|" not in err
    tempfile.tempdir = None
    assert not [p for p in (tmp_path / "tmp").iterdir() if p.name.startswith("lvas-")]
