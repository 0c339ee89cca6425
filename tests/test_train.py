"""End-to-end: seconds-long training on a tiny synthetic set, MLflow contents, resume, failures."""

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from lvas.cli import main
from lvas.config import load_config
from lvas.engine.checkpoint import load_checkpoint
from lvas.engine.trainer import TrackOptions, TrainingDiverged, train_experiment

OFF = TrackOptions(active=False)

ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(synth, **over):
    base = [f"data.root={synth}", "data.frames=4", "data.size=48", "data.workers=0", "train.batch_size=4",
            "train.epochs=3", "train.lr=0.003", "tracking.system_metrics=false", "tracking.overlays=2",
            "model.text.hidden=16", "model.text.embed_dim=8", "model.cmam.channels=8", "model.decoder.channels=8"]
    return load_config(ROOT / "experiments" / "cpu_small.yaml", base + [f"{k}={v}" for k, v in over.items()])


def run_metrics(run_id: str) -> dict:
    return mlflow.get_run(run_id).data.metrics


def test_train_eval_end_to_end_with_mlflow(synth, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_cfg(synth, **{"train.epochs": 4})
    result, run_id = train_experiment(cfg, tmp_path / "run", progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert (tmp_path / "mlflow.db").is_file()  # the default tracking URI
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.spatial.name"] == "tiny2d" and run.data.params["train.epochs"] == "4"
    assert run.data.tags["config_hash"] == load_checkpoint(result.checkpoint)["config_hash"]
    assert {"dataset", "protocol", "git_commit"} <= set(run.data.tags)
    hist = mlflow.MlflowClient().get_metric_history(run_id, "train_loss")
    assert [m.step for m in hist] == [1, 2, 3, 4]
    assert "test/motion/AP" in run.data.metrics and "test/appearance/mIoU" in run.data.metrics
    assert not any(k.startswith("val/") for k in run.data.metrics)  # select: last holds out no validation split
    assert run.data.tags["select"] == "last" and run.data.tags["selected_epoch"] == "4"
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"config.yaml", "flops.json", "checkpoints", "images", "history.json", "test_metrics.json"} <= arts
    images = [a.path.split("/")[-1] for a in mlflow.MlflowClient().list_artifacts(run_id, "images")]
    assert {name.split("+")[0] for name in images if name.endswith(".png")} == {"overlay_00", "overlay_01"}
    assert all("+step+4+" in name for name in images if name.endswith(".png"))  # at the selected epoch
    # eval rebuilds the model from the checkpoint alone and reproduces the logged best metrics
    assert main(["eval", str(result.checkpoint), "--quiet", "--json", str(tmp_path / "m.json")]) == 0
    import json

    m = json.loads((tmp_path / "m.json").read_text())
    assert m["mIoU"] == pytest.approx(result.test["mIoU"])
    assert m["protocol"] == "paper" and "motion/AP" in m
    # the same predictions under every protocol: the main one equals test/, the others are logged too
    protos = json.loads((tmp_path / "run" / "test_protocols.json").read_text())
    assert set(protos) == {"paper", "lbdt", "strict", "coco", "coco_top1"}
    assert protos["paper"]["AP"] == pytest.approx(result.test["AP"])
    assert run_metrics(run_id)["protocol/lbdt/mIoU"] == pytest.approx(protos["lbdt"]["mIoU"])
    assert run_metrics(run_id)["protocol/coco/mAP"] == pytest.approx(protos["coco"]["mAP"])
    assert protos["coco"] == protos["coco_top1"]  # one mask per query: the same detections
    assert main(["eval", str(result.checkpoint), "--quiet", "--protocol", "lbdt", "--json", str(tmp_path / "l.json")]) == 0
    assert json.loads((tmp_path / "l.json").read_text())["mIoU"] == pytest.approx(protos["lbdt"]["mIoU"])
    # and by MLflow run id
    assert main(["eval", run_id, "--quiet", "--protocol", "strict"]) == 0
    assert "protocol strict" in capsys.readouterr().out


def test_resume_gives_the_same_result(synth, tmp_path):
    cfg = tiny_cfg(synth)
    full, _ = train_experiment(cfg, tmp_path / "full", progress=False, track=OFF)

    def stop_after_two(epoch, metrics, stage):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_experiment(cfg, tmp_path / "cut", progress=False, track=OFF, epoch_callback=stop_after_two)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1  # 0-based: two epochs done
    resumed, _ = train_experiment(cfg, tmp_path / "cut", resume=True, progress=False, track=OFF)
    a = load_checkpoint(full.last_checkpoint)["model"]
    b = load_checkpoint(resumed.last_checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]


def test_nan_loss_fails_cleanly(synth, tmp_path, monkeypatch, capsys):
    import lvas.engine.loop as loop

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loop, "build_loss", lambda t: lambda out, target: torch.tensor(float("nan"), requires_grad=True))
    cfg = tiny_cfg(synth)
    with pytest.raises(TrainingDiverged, match="loss is nan at epoch 1, step 1"):
        train_experiment(cfg, tmp_path / "run", progress=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=[cfg.name])
    assert list(runs["status"]) == ["FAILED"]
    text = mlflow.artifacts.load_text(f"runs:/{runs['run_id'][0]}/traceback.txt")
    assert "TrainingDiverged" in text
    # the CLI says why in one line, with no traceback
    rc = main(["train", str(ROOT / "experiments/cpu_small.yaml"), f"data.root={synth}", "data.frames=4",
               "data.size=48", "data.workers=0", "tracking.system_metrics=false", f"train.out_dir={tmp_path / 'r'}",
               "--quiet"])
    assert rc == 1
    assert "training diverged" in capsys.readouterr().err


def test_two_stage_recipe_freezes_the_stage1_encoders(synth, tmp_path):
    cfg = tiny_cfg(synth, **{"train.recipe": f"{{name: two_stage, stage2_epochs: 1, stage1_cache: {tmp_path / 'cache'}}}",
                             "train.epochs": 1})
    seen = []
    result, _ = train_experiment(cfg, tmp_path / "run", progress=False, track=OFF,
                                 epoch_callback=lambda e, m, st: seen.append((st.text(e, 1), st.before, st.total)))
    # every epoch says which of the three trainings it belongs to and where it is in all of them
    assert seen == [("stage 1/3 (spatial) epoch 1/1", 0, 3), ("stage 2/3 (temporal) epoch 1/1", 1, 3),
                    ("stage 3/3 (fusion and decoder) epoch 1/1", 2, 3)]
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir())
    assert cached == ["spatial", "temporal"]
    final = load_checkpoint(result.last_checkpoint)["model"]
    s1 = load_checkpoint(next((tmp_path / "cache").glob("spatial-*")) / "model.pt")["model"]
    for k in s1:
        if k.startswith(("spatial.", "cmam.spatial.", "text.grus.spatial.")):
            assert torch.equal(final[k], s1[k]), k
    assert any(not torch.equal(final[k], s1[k]) for k in s1 if k.startswith("decoder.proj.spatial"))
    # a second trial with the same stage-1 networks reuses them (no new cache entries)
    cfg2 = tiny_cfg(synth, **{"train.recipe": f"{{name: two_stage, stage2_epochs: 1, stage1_cache: {tmp_path / 'cache'}}}",
                              "train.epochs": 1, "model.fusion": "max"})
    train_experiment(cfg2, tmp_path / "run2", progress=False, track=OFF)
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_predict_writes_masks_and_overlays(synth, tmp_path):
    cfg = tiny_cfg(synth, **{"train.epochs": 1})
    result, _ = train_experiment(cfg, tmp_path / "run", progress=False, track=OFF)
    frames = synth / "Release" / "frames" / "synth00000"
    assert main(["predict", str(result.checkpoint), "--video", str(frames), "--query", "the red circle",
                 "--out", str(tmp_path / "pred"), "--quiet", "--mp4"]) == 0
    names = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert names == [f"mask_{i:05d}.png" for i in range(1, 5)] + ["overlay.gif", "overlay.mp4"]
    from PIL import Image

    with Image.open(tmp_path / "pred" / "mask_00001.png") as im:
        assert im.size == (48, 48)
    with Image.open(tmp_path / "pred" / "overlay.gif") as im:
        assert im.n_frames == 4
    assert main(["predict", str(result.checkpoint), "--video", str(tmp_path / "none.mp4"), "--query", "x",
                 "--out", str(tmp_path / "p2"), "--quiet"]) == 2


def test_an_epoch_killed_between_checkpoint_and_log_is_logged_once(synth, tmp_path, monkeypatch):
    """The checkpoint is written before the epoch's metrics are logged; a run killed in between logs
    the missing epoch on resume, and never logs an epoch twice."""
    from lvas.tracker import Tracker

    monkeypatch.chdir(tmp_path)
    cfg = tiny_cfg(synth, **{"train.epochs": 3, "tracking.overlays": 0})
    original = Tracker.log_metrics

    def dies_at_step_2(self, metrics, step=None, prefix=""):
        if step == 2 and "train_loss" in metrics:
            raise KeyboardInterrupt  # the process is killed right after epoch 2's checkpoint
        return original(self, metrics, step, prefix)

    monkeypatch.setattr(Tracker, "log_metrics", dies_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        train_experiment(cfg, tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1  # epoch 2 (0-based 1) is on disk
    monkeypatch.setattr(Tracker, "log_metrics", original)
    _, run_id = train_experiment(cfg, tmp_path / "run", resume=True, progress=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    steps = sorted(m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "train_loss"))
    assert steps == [1, 2, 3]


@pytest.mark.parametrize("pipeline,protocol", [("released", "paper"), ("stretch", "strict")])
def test_predict_on_a_video_equals_eval_on_the_same_frames(tmp_path, pipeline, protocol):
    """``lvas predict`` builds each clip as the dataset does under the model's input pipeline (its
    resize, its clip start) and binarises as the run's protocol does: its mask for an annotated frame
    is the mask evaluation scores. Frames of 64 px, model input 48 px, clips of 4 every 2nd frame."""
    from PIL import Image

    from lvas.data import build_dataset, collate
    from lvas.data.synthetic import generate
    from lvas.engine.checkpoint import model_from_checkpoint
    from lvas.engine.inference import forward, masks, scored_frames

    root = tmp_path / "synth"
    generate(root, videos=6, frames=8, size=64, progress=False)
    cfg = tiny_cfg(root, **{"train.epochs": 1, "model.input": pipeline, "train.protocol": protocol,
                            "data.frame_stride": 2, "tracking.overlays": 0})
    result, _ = train_experiment(cfg, tmp_path / "run", progress=False, track=OFF)
    cfg, model, vocab = model_from_checkpoint(load_checkpoint(result.checkpoint))
    ds = build_dataset(cfg, "test", vocab)
    checked = 0
    for i in range(len(ds)):
        item = ds[i]
        batch = collate([item])
        with torch.no_grad():
            outputs = forward(model.eval(), batch, torch.device("cpu"))
        ((logits, gt, meta),) = list(scored_frames(outputs, batch))
        expected = masks(logits, gt, meta, cfg.train.protocol)[0].numpy()
        video, query = meta["video"], meta["query"]
        out = tmp_path / "pred" / f"{i}"
        assert main(["predict", str(result.checkpoint), "--video", str(root / "Release" / "frames" / video),
                     "--query", query, "--out", str(out), "--quiet"]) == 0
        with Image.open(out / f"mask_{int(meta['frame']):05d}.png") as im:
            got = np.asarray(im) > 0
        assert got.shape == expected.shape == (64, 64)
        assert (got == expected).all(), f"sample {i}: {(got != expected).sum()} pixels differ"
        checked += 1
    assert checked == len(ds) >= 2
