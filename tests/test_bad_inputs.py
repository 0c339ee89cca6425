"""Every sub-command against bad inputs: a non-zero exit, one message naming the key, option or
file (and what was expected), no traceback, and nothing run from a crafted file."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lvas.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = {"data": {"frames": 4, "size": 48, "workers": 0}, "train": {"batch_size": 4, "epochs": 1},
        "tracking": {"system_metrics": False, "overlays": 0},
        "model": {"text": {"hidden": 16, "embed_dim": 8}, "cmam": {"channels": 8}, "decoder": {"channels": 8}}}


class Payload:
    """Unpickling this creates the file ``MARKER`` names: proof that a loader ran code from a file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def world(synth, tmp_path_factory):
    w = tmp_path_factory.mktemp("bad")
    exp = w / "tiny.yaml"
    exp.write_text(yaml.safe_dump({"base": str(ROOT / "experiments" / "cpu_small.yaml"),
                                   **{**TINY, "data": {**TINY["data"], "root": str(synth)}}}))
    uri = f"sqlite:///{w / 'ml.db'}"
    assert main(["train", str(exp), "--run-dir", str(w / "run"), "--quiet", "--tracking-uri", uri]) == 0
    ckpt = w / "run" / "model.pt"
    state = torch.load(ckpt, weights_only=True)
    state["config"]["model"]["decoder"]["channels"] = 16  # weights of another width than the config says
    torch.save(state, w / "mismatch.pt")
    marker = w / "PWNED"
    with open(w / "crafted.pt", "wb") as fh:
        pickle.dump({"config": {}, "model": Payload(str(marker))}, fh)
    (w / "frames").mkdir()
    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((40, 50, 3)) * 255).astype(np.uint8)).save(w / "frames" / f"{i:03d}.png")
    (w / "bomb").mkdir()
    Image.new("1", (20000, 20000)).save(w / "bomb" / "000.png")  # 48 KB on disk, 400 megapixels decoded
    (w / "mixed").mkdir()
    for i, size in enumerate([(40, 50), (60, 50)]):
        Image.new("RGB", size).save(w / "mixed" / f"{i:03d}.png")
    for name, body in {
        "good": "variants:\n  - {label: A, overrides: {}}\n",
        "q0": "method: random\nrun_cap: 2\noverrides: {train.select: best_val}\n"
              "parameters:\n  train.lr: {distribution: q_uniform, min: 0.001, max: 0.01, q: 0}\n",
        "dotname": "",
        "badlabel": "variants:\n  - {label: ../../x, overrides: {}}\n",
    }.items():
        (w / f"{name}.yaml").write_text(f"name: {'..' if name == 'dotname' else name}\nbase: {exp}\n"
                                        f"metric: {{name: AP}}\n{body}")
    (w / "list.yaml").write_text("- a\n- b\n")
    (w / "broken.yaml").write_text("name: [unclosed\n")
    return {"w": w, "exp": exp, "ck": ckpt, "uri": uri, "syn": synth, "marker": marker}


# (argv with {placeholders}, text the one error line must contain)
CASES = [
    # data
    ("data synth --out {w}/s --videos -3", "--videos: -3"),
    ("data synth --out {w}/s --frames 0", "--frames: 0"),
    ("data synth --out {w}/s --size 3", "--size: 3"),
    ("data synth --out {w}/s --seed x", "--seed"),
    ("data synth --out /proc/lvas-nope --videos 1", "/proc/lvas-nope"),
    ("data prepare a2d {w}/missing", "{w}/missing"),
    ("data prepare jhmdb {w}/missing", "{w}/missing"),
    ("data check {w}/missing --frames 0", "--frames: 0"),
    # train
    ("train {exp} train.device=cudaXYZ --tracking-uri {uri}", "train.device: 'cudaXYZ'"),
    ("train {w}/missing.yaml", "{w}/missing.yaml"),
    ("train {w}/list.yaml", "{w}/list.yaml"),
    ("train {w}/broken.yaml", "{w}/broken.yaml: not valid YAML"),
    ("train {exp} train.epochs=0", "train.epochs: 0"),
    ("train {exp} train.threads=0", "train.threads: 0"),
    ("train {exp} model.fusion=nosuchfusion", "model.fusion"),
    ("train {exp} nokey", "expected key.path=value"),
    ("train {exp} --tags notjson --tracking-uri {uri}", "--tags: not valid JSON"),
    ("train {exp} --tags [1] --tracking-uri {uri}", "--tags: expected a JSON object"),
    ("train {exp} --run-dir /proc/lvas-nope --tracking-uri {uri}", "/proc/lvas-nope"),
    ("train {exp} --tracking-uri sqlite:////proc/lvas-nope/ml.db --run-dir {w}/r1", "/proc/lvas-nope"),
    ("train {exp} name=../../escape --run-dir {w}/r2", "name: '../../escape'"),
    ("train {exp} --resume --run-dir {w}/empty --tracking-uri {uri}", "--resume: {w}/empty holds no last.pt"),
    ("train {exp} --run-dir {w}/run --tracking-uri {uri}", "already holds a run"),
    ("train {exp} data.root={w}/missing --run-dir {w}/r3 --tracking-uri {uri}", "{w}/missing"),
    ("train {exp} train.init_checkpoint={w}/missing.pt --run-dir {w}/r4 --tracking-uri {uri}", "{w}/missing.pt"),
    ("train {exp} train.init_checkpoint={w}/crafted.pt --run-dir {w}/r5 --tracking-uri {uri}", "{w}/crafted.pt"),
    # eval
    ("eval {ck} model.fusion=max --quiet", "model.fusion: cannot change when evaluating"),
    ("eval {ck} train.epochs=7 --quiet", "train.epochs: cannot change"),
    ("eval {ck} nokey --quiet", "expected key.path=value"),
    ("eval {ck} data.nokey=3 --quiet", "data.nokey: unknown key"),
    ("eval {ck} train.device=cudaXYZ --quiet", "train.device: 'cudaXYZ'"),
    ("eval {w}/missing.pt", "{w}/missing.pt"),
    ("eval {exp}", "{exp}: not a readable checkpoint"),
    ("eval {w}/crafted.pt", "{w}/crafted.pt: not a readable checkpoint"),
    ("eval {w}/mismatch.pt", "{w}/mismatch.pt: its weights do not match its config"),
    ("eval deadbeefdeadbeef --tracking-uri {uri}", "deadbeefdeadbeef"),
    ("eval {ck} --split nosuch --quiet", "split 'nosuch'"),
    ("eval {ck} --root {w}/missing --quiet", "{w}/missing"),
    ("eval {ck} --protocol loose", "--protocol"),
    ("eval {ck} --json /proc/lvas-nope/x.json --quiet", "/proc/lvas-nope/x.json"),
    # predict
    ("predict {ck} --video {w}/missing --query man --out {w}/p --quiet", "{w}/missing"),
    ("predict {ck} --video {exp} --query man --out {w}/p --quiet", "{exp}: cannot decode video"),
    ("predict {ck} --video {syn} --query man --out {w}/p --quiet", "{syn}: no frames"),
    ("predict {ck} --video {w}/bomb --query man --out {w}/p --quiet", "{w}/bomb/000.png"),
    ("predict {ck} --video {w}/frames --query man --out {w}/p --max-pixels 1000 --quiet", "over the limit of 1,000"),
    ("predict {ck} --video {w}/mixed --query man --out {w}/p --quiet", "{w}/mixed/001.png"),
    ("predict {ck} --video {w}/frames --query '' --out {w}/p", "--query: empty"),
    ("predict {ck} --video {w}/frames --query man --out /proc/lvas-nope --quiet", "--out /proc/lvas-nope"),
    ("predict {w}/crafted.pt --video {w}/frames --query man --out {w}/p", "{w}/crafted.pt"),
    ("predict {w}/mismatch.pt --video {w}/frames --query man --out {w}/p", "{w}/mismatch.pt"),
    ("predict {ck} --query man --out {w}/p", "--video"),
    # flops, bench, list
    ("flops {w}/missing.yaml", "{w}/missing.yaml"),
    ("flops {exp} --frames 0", "--frames: 0"),
    ("flops {exp} --size -5", "--size: -5"),
    ("flops", "give an EXPERIMENT.yaml or --table"),
    ("bench model {exp} --repeats 0", "--repeats: 0"),
    ("bench model {exp} --batch 0", "--batch: 0"),
    ("bench model {exp} --device cudaXYZ", "--device: 'cudaXYZ'"),
    ("bench data {exp} --samples 0", "--samples: 0"),
    ("bench data {exp} --workers -1", "--workers: -1"),
    ("bench tea {exp}", "argument what"),
    ("list --nonsense", "--nonsense"),
    # sweep, report
    ("sweep {w}/missing.yaml", "{w}/missing.yaml"),
    ("sweep {w}/q0.yaml --dry-run", "parameters.train.lr.q: 0"),
    ("sweep {w}/good.yaml --workers 0 --out {w}/sw", "--workers: 0"),
    ("sweep {w}/good.yaml --gpus-per-trial 0 --out {w}/sw", "--gpus-per-trial: 0"),
    ("sweep {w}/good.yaml --stale-after -1 --out {w}/sw", "--stale-after: -1"),
    ("sweep {w}/good.yaml --storage postgresql://user:secret@127.0.0.1:1/db --out {w}/sw", "user:***@127.0.0.1"),
    ("sweep {w}/good.yaml --storage nonsense://x --out {w}/sw", "--storage nonsense://x"),
    ("sweep {w}/good.yaml --out /proc/lvas-nope --tracking-uri {uri}", "--out /proc/lvas-nope"),
    ("sweep {w}/good.yaml --tracking-uri sqlite:////proc/lvas-nope/x.db --out {w}/sw", "/proc/lvas-nope"),
    ("sweep {w}/dotname.yaml --dry-run", "name: expected"),
    ("sweep {w}/badlabel.yaml --dry-run", "variants[0].label: '../../x'"),
    ("report {w}/missing.yaml", "{w}/missing.yaml"),
    ("report", "name sweep YAMLs or give --all"),
    ("report {w}/good.yaml --samples -1", "--samples: -1"),
    ("report --all --sweeps-dir {w}/missing", "--sweeps-dir {w}/missing"),
    ("nosuchcommand", "invalid choice"),
]


@pytest.mark.parametrize("line,expected", CASES, ids=[c[0].split(" {")[0] + f"-{i}" for i, c in enumerate(CASES)])
def test_bad_input_gets_one_clear_message(world, line, expected, capsys, monkeypatch):
    import shlex

    monkeypatch.chdir(world["w"])
    argv = [a.format(**world) for a in shlex.split(line)]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    assert rc not in (0, None), f"{line!r} was accepted"
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1, err
    assert expected.format(**world) in errors[0], errors[0]
    assert not world["marker"].exists(), "a crafted file ran code"


def test_a_credential_never_reaches_a_saved_config_a_param_or_a_checkpoint(world, synth, tmp_path):
    """tracking.uri with user:password@ is redacted in config.yaml, the MLflow params and the checkpoint."""
    from mlflow import MlflowClient

    from lvas.config import load_config, redact
    from lvas.engine.trainer import TrackOptions, train_experiment

    assert redact("postgresql://ann:s3cr%40t@db:5432/x and http://bob:pw@h/") == "postgresql://ann:***@db:5432/x and http://bob:***@h/"
    cfg = load_config(world["exp"], ["tracking.uri=http://ann:hunter2@example.invalid:5000"])
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    result, run_id = train_experiment(cfg, tmp_path / "run", track=TrackOptions(uri), progress=False)
    texts = [(tmp_path / "run" / "config.yaml").read_text(), str(torch.load(result.checkpoint, weights_only=True)["config"]),
             str(MlflowClient(uri).get_run(run_id).data.params)]
    for text in texts:
        assert "hunter2" not in text and "ann:***@example.invalid" in text


def test_the_real_command_prints_no_traceback(world, tmp_path):
    """Through the installed entry point (a new process), not just main()."""
    for argv in (["predict", str(world["ck"]), "--video", str(world["w"] / "bomb"), "--query", "man", "--out",
                  str(tmp_path / "p"), "--quiet"],
                 ["sweep", str(world["w"] / "good.yaml"), "--storage", "postgresql://u:pw@127.0.0.1:1/db",
                  "--out", str(tmp_path / "sw")]):
        proc = subprocess.run([sys.executable, "-m", "lvas.cli", *argv], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len([ln for ln in proc.stderr.splitlines() if "error:" in ln]) == 1
        assert ":pw@" not in proc.stderr
