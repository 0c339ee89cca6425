"""Hostile and careless inputs, third round (issue 24): nothing lost or altered, no secret leaves the
machine. Our own cases for each class the review found."""

import shutil
import sqlite3
from pathlib import Path

import mlflow
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
    exp = folder / "tiny.yaml"
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
    assert "a2d_annotation.txt: header must name video_id,instance_id,query" in err
    assert SECRET not in err and SECRET[:16] not in err
    con = sqlite3.connect(tmp_path / "ml.db")
    stored = " ".join(str(v) for (v,) in con.execute("SELECT value FROM tags"))
    assert SECRET[:8] not in stored and "aws_secret" not in stored
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cpu_small").experiment_id])
    assert run.info.status == "FAILED" and "a2d_annotation.txt: header must name" in run.data.tags["failure"]
    tb = Path(client.download_artifacts(run.info.run_id, "traceback.txt", str(tmp_path))).read_text()
    assert "a2d_annotation.txt: header must name" in tb and SECRET[:8] not in tb and "aws_secret" not in tb


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
