"""MeViS (issue 28): the public layout written by the test, multi-object targets, J&F as MeViS's own
``tools/eval_mevis.py`` computes it, training, evaluation, the CodaBench submission and data check.

The reference here is MeViS's procedure written from its script, independently of lvas: per
expression, the ground truth of a frame is the *sum* of its anno_ids' decoded RLEs (pycocotools),
the prediction is the frame's PNG read as greyscale (OpenCV), J is DAVIS's ``db_eval_iou`` (bool
masks, |P & G| / |P | G|, 1 where the union is empty) and F DAVIS's ``f_measure`` (``seg2bmap``
boundaries matched within a disk of ceil(0.008 x diagonal) pixels, OpenCV dilation); J and F are
averaged over every listed frame of the video, then over the expressions; J&F = (J + F) / 2.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from data_writers import write_mevis
from davis_toolkit import db_eval_iou, f_measure
from lvas.cli import main
from lvas.data import DataError
from lvas.data.mevis import MeViS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under numpy 2
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- MeViS's procedure


def eval_mevis(meta_path: Path, mask_path: Path, pred_root: Path) -> dict:
    """MeViS's tools/eval_mevis.py on a prediction folder ``<video>/<exp>/<frame>.png``:
    {video_exp: (J, F)} and the means."""
    import cv2
    from pycocotools import mask as cocomask

    exp_dict = json.loads(meta_path.read_text())["videos"]
    mask_dict = json.loads(mask_path.read_text())
    out = {}
    for vid_name, vid in exp_dict.items():
        for exp in vid["expressions"]:
            pred_0 = cv2.imread(str(pred_root / vid_name / exp / "00000.png"), cv2.IMREAD_GRAYSCALE)
            h, w = pred_0.shape
            n = len(vid["frames"])
            gt_masks, pred_masks = np.zeros((n, h, w), np.uint8), np.zeros((n, h, w), np.uint8)
            for k, frame_name in enumerate(vid["frames"]):
                for anno_id in vid["expressions"][exp]["anno_id"]:
                    rle = mask_dict[str(anno_id)][k]
                    if rle:
                        gt_masks[k] += cocomask.decode(rle)
                pred_masks[k] = cv2.imread(str(pred_root / vid_name / exp / f"{frame_name}.png"), cv2.IMREAD_GRAYSCALE)
            j = db_eval_iou(gt_masks, pred_masks).mean()
            f = np.mean([f_measure(pred_masks[k], gt_masks[k]) for k in range(n)])
            out[f"{vid_name}_{exp}"] = (j, f)
    j, f = np.mean([v[0] for v in out.values()]), np.mean([v[1] for v in out.values()])
    return {"per": out, "J": 100 * j, "F": 100 * f, "JF": 100 * (j + f) / 2}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mevis(tmp_path_factory):
    root = tmp_path_factory.mktemp("mevis")
    return root, write_mevis(root)


def test_an_expression_is_the_union_of_its_objects_in_every_frame(mevis):
    """Each sample's target is the union of the expression's objects there; the frames where the
    object has left the view are samples too, with an empty target."""
    root, info = mevis
    for split in ("train", "valid_u"):
        ds = MeViS(root, split, frames=3, size=32)
        assert len(ds) == sum(1 for k in info["truth"] if k[0] == split)
        empty = 0
        for i, r in enumerate(ds.index.itertuples()):
            gt = ds[i]["gt"][0].numpy()
            assert np.array_equal(gt, info["truth"][(split, r.video, r.expression, r.frame_name)])
            empty += not gt.any()
        assert empty > 0  # the one that leaves
    two = MeViS(root, "valid_u", size=32).index
    assert set(two.loc[two["expression"] == "1", "anno_ids"].map(len)) == {2}
    whole = MeViS(root, "valid_u", size=32, clips="video")
    assert len(whole) == 6 and whole.variable_clips
    item = whole[0]
    assert len(item["meta"]["frame_names"]) == item["clip"].shape[1] == len(item["gt"])


def test_j_and_f_equal_mevis_eval_script(mevis, tmp_path):
    """Noisy predictions written as MeViS's prediction folder: lvas's video_jf evaluator, fed the
    same masks and lvas's own targets, gives MeViS's J, F and J&F per expression and overall."""
    import torch

    from lvas.metrics import VideoJFEvaluator

    root, info = mevis
    rng = np.random.default_rng(1)
    ds = MeViS(root, "valid_u", frames=1, size=32)
    ev = VideoJFEvaluator("strict")
    for i, r in enumerate(ds.index.itertuples()):
        truth = ds[i]["gt"][0]
        pred = np.roll(truth.numpy(), int(rng.integers(-3, 4)), axis=1) | (rng.random(truth.shape) < 0.02)
        if rng.random() < 0.2:
            pred[:] = False  # some frames predicted empty (against empty and non-empty targets)
        p = tmp_path / "pred" / r.video / r.expression / f"{r.frame_name}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pred.astype(np.uint8) * 255).save(p)
        ev.process(torch.from_numpy(pred), truth, {"video": r.video, "expression": r.expression})
    ref = eval_mevis(root / "valid_u" / "meta_expressions.json", root / "valid_u" / "mask_dict.json", tmp_path / "pred")
    ours = ev.compute()
    per = ev.jf.per_expression()
    assert len(per) == len(ref["per"]) == 6
    for key, (j, f) in ref["per"].items():
        vid, exp = key.rsplit("_", 1)
        assert per[f"{vid}/{exp}"] == pytest.approx((j, f), abs=1e-12)
    for k in ("J", "F", "JF"):
        assert ours[k] == pytest.approx(ref[k], abs=1e-10), k
    assert 5 < ours["JF"] < 95


@pytest.fixture(scope="module")
def trained(mevis, tmp_path_factory):
    root, _ = mevis
    w = tmp_path_factory.mktemp("mevis_run")
    exp = w / "mevis.yaml"
    exp.write_text(yaml.safe_dump({
        "base": str(ROOT / "experiments" / "cpu_small.yaml"), "name": "mevis_tiny",
        "data": {"dataset": "mevis", "root": str(root), "test_split": "valid_u", "frames": 3, "size": 32,
                 "workers": 0},
        "model": {"text": {"hidden": 16, "embed_dim": 8}, "cmam": {"channels": 8}, "decoder": {"channels": 8}},
        "train": {"epochs": 1, "batch_size": 8, "limit_batches": 3, "protocol": "strict"},
        "tracking": {"system_metrics": False, "overlays": 0}}))
    uri = f"sqlite:///{w / 'ml.db'}"
    assert main(["train", str(exp), "--run-dir", str(w / "run"), "--quiet", "--tracking-uri", uri]) == 0
    return {"w": w, "exp": exp, "ck": w / "run" / "model.pt", "uri": uri, "root": root}


def test_train_eval_and_the_codabench_submission_agree_with_mevis_script(trained, tmp_path, capsys):
    """A model trained on MeViS's train split: lvas eval on valid_u gives the J&F that MeViS's script
    gives on the masks lvas eval --submission writes for the same split (one inference path), and
    the valid split's zip holds <video>/<expression>/<frame>.png for every listed frame."""
    m = json.loads((trained["w"] / "run" / "test_metrics.json").read_text())
    assert m["expressions"] == 6
    sub = tmp_path / "valid_u.zip"
    assert main(["eval", str(trained["ck"]), "--split", "valid_u", "--submission", str(sub), "--quiet"]) == 0
    with zipfile.ZipFile(sub) as zf:
        zf.extractall(tmp_path / "pred")
    root = trained["root"]
    ref = eval_mevis(root / "valid_u" / "meta_expressions.json", root / "valid_u" / "mask_dict.json", tmp_path / "pred")
    for k in ("J", "F", "JF"):
        assert m[k] == pytest.approx(ref[k], abs=1e-9), k
    capsys.readouterr()
    out = tmp_path / "valid.zip"
    assert main(["eval", str(trained["ck"]), "--split", "valid", "--submission", str(out), "--quiet"]) == 0
    meta = json.loads((root / "valid" / "meta_expressions.json").read_text())["videos"]
    want = {f"{v}/{e}/{f}.png" for v, spec in meta.items() for e in spec["expressions"] for f in spec["frames"]}
    with zipfile.ZipFile(out) as zf:
        assert set(zf.namelist()) == want
        im = Image.open(io.BytesIO(zf.read(sorted(want)[0])))
        assert im.mode == "L" and im.size == (48, 36) and set(np.unique(np.asarray(im))) <= {0, 255}
    assert main(["eval", str(trained["ck"]), "--split", "valid", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'valid' split has no public masks" in err and "score the 'valid_u' split" in err


def test_a_query_based_model_trains_on_multi_object_targets_with_empty_frames(mevis, tmp_path):
    """ReferFormer (CPU-sized) on MeViS: whole-clip targets where the object leaves the view (empty
    masks in some frames) and two-object unions; the loss stays finite and the model is scored."""
    from lvas.config import load_config
    from lvas.engine.trainer import TrackOptions, train_experiment

    root, _ = mevis
    cfg = load_config(ROOT / "experiments" / "referformer_cpu.yaml", [
        "data.dataset=mevis", f"data.root={root}", "data.test_split=valid_u", "data.frames=3", "data.size=32",
        "data.workers=0", "train.epochs=2", "train.batch_size=4", "train.limit_batches=3", "model.decoder.queries=3",
        "tracking.overlays=0"])
    result, _ = train_experiment(cfg, tmp_path / "run", progress=False, track=TrackOptions(active=False))
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert result.test["expressions"] == 6 and 0 <= result.test["JF"] <= 100


@pytest.mark.parametrize("damage, message", [
    ("missing_anno", "video {v}, expression 0, anno_id {a}: not in the file"),
    ("short_list", "video {v}, expression 0, anno_id {a}: 2 RLEs for the video's"),
    ("no_anno", "video {v}, expression 0: no anno_id"),
    ("bad_name", "video id"),
])
def test_a_damaged_annotation_is_one_line_naming_file_video_expression_and_anno_id(mevis, tmp_path, damage, message):
    import shutil

    root, info = mevis
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    meta_p, mask_p = bad / "valid_u" / "meta_expressions.json", bad / "valid_u" / "mask_dict.json"
    meta, masks = json.loads(meta_p.read_text()), json.loads(mask_p.read_text())
    v = sorted(meta["videos"])[0]
    a = str(meta["videos"][v]["expressions"]["0"]["anno_id"][0])
    if damage == "missing_anno":
        del masks[a]
    elif damage == "short_list":
        masks[a] = masks[a][:2]
    elif damage == "no_anno":
        meta["videos"][v]["expressions"]["0"]["anno_id"] = []
    else:
        meta["videos"]["../etc"] = meta["videos"].pop(v)
    meta_p.write_text(json.dumps(meta))
    mask_p.write_text(json.dumps(masks))
    with pytest.raises(DataError) as e:
        MeViS(bad, "valid_u", size=32)
    text = str(e.value)
    assert message.format(v=v, a=a) in text and "\n" not in text
    assert str(mask_p if damage in ("missing_anno", "short_list") else meta_p) in text
    assert "../etc" not in text  # a name that is not plain is refused, not quoted


def test_an_rle_of_another_size_and_a_missing_frame_are_named(mevis, tmp_path, capsys):
    import shutil

    root, _ = mevis
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    meta = json.loads((bad / "valid_u" / "meta_expressions.json").read_text())["videos"]
    v = sorted(meta)[0]
    a = str(meta[v]["expressions"]["0"]["anno_id"][0])
    masks = json.loads((bad / "valid_u" / "mask_dict.json").read_text())
    k = next(i for i, r in enumerate(masks[a]) if r)
    masks[a][k]["size"] = [10, 12]
    (bad / "valid_u" / "mask_dict.json").write_text(json.dumps(masks))
    frame = bad / "valid_u" / "JPEGImages" / v / f"{meta[v]['frames'][1]}.jpg"
    frame.unlink()
    ds = MeViS(bad, "valid_u", frames=1, size=32)
    i = next(i for i, r in enumerate(ds.index.itertuples()) if r.video == v and r.expression == "0" and r.frame == k + 1)
    with pytest.raises(DataError, match=rf"video {v}, expression 0, anno_id {a}, frame {meta[v]['frames'][k]}: RLE of "
                                        r"12x10 pixels; the frame is 48x36"):
        ds[i]
    assert main(["data", "check", str(bad), "--dataset", "mevis"]) == 1
    out = capsys.readouterr().out
    assert f"{frame}: missing frame" in out and f"anno_id {a}" in out and "RLE of 12x10 pixels" in out
    assert main(["data", "check", str(root), "--dataset", "mevis"]) == 0
    out = capsys.readouterr().out
    assert "valid_u: expressions" in out and "0 problem(s)" in out and "train: 2+ object exps" in out


def test_the_mevis_sweep_reports_the_published_rows_with_their_split(trained, tmp_path):
    """sweeps/table_mevis.yaml as shipped (three methods at paper size, validated), then run small on the
    fixture: its report puts the published rows beside lvas's valid_u row, every published label names
    its split, and no lvas row is differenced with a valid-server figure."""
    import pandas as pd

    shipped = ROOT / "sweeps" / "table_mevis.yaml"
    assert main(["sweep", str(shipped), "--dry-run"]) == 0
    spec = yaml.safe_load(shipped.read_text())
    spec.update(base=str(trained["exp"]), seeds=2, overrides={"train.epochs": 1, "train.limit_batches": 2},
                variants=[{"label": "CSTM (lvas)", "overrides": {}}])
    tiny = tmp_path / "table_mevis.yaml"
    tiny.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    assert main(["sweep", str(tiny), "--quiet", "--tracking-uri", uri, "--out", str(tmp_path / "sweeps")]) == 0
    assert main(["report", str(tiny), "--tracking-uri", uri, "--out", str(tmp_path / "reports"), "--no-figures"]) == 0
    csv = pd.read_csv(tmp_path / "reports" / "table_mevis" / "table_mevis.csv")
    published = csv[csv["source"] == "published"].set_index("row")
    assert published.loc["ReferFormer CVPR2022 (valid, server; MeViS paper)", "JF"] == pytest.approx(31.0)
    assert published.loc["SAMWISE CVPR2025 (valid_u)", "JF"] == pytest.approx(57.1)
    assert all("valid" in r for r in published.index)
    ours = csv[csv["source"] == "lvas"].set_index("row")
    assert ours.loc["CSTM (lvas)", "n"] == 2 and 0 <= ours.loc["CSTM (lvas)", "JF"] <= 100
    assert "Δ lvas − paper" not in set(csv["source"])


def test_the_synthetic_motion_set_runs_the_multi_object_path_end_to_end(tmp_path, capsys):
    """`lvas data synth --layout mevis`: clips where two actors share an action ("the two moving left":
    the target is both), one leaves the view (its last frames are empty targets) and one is named by
    look and action; a CPU model trains on it with no download and is scored per query kind."""
    out = tmp_path / "motion"
    assert main(["data", "synth", "--out", str(out), "--layout", "mevis", "--videos", "15", "--size", "48",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "multi-object 15" in printed and "leaving 15" in printed
    assert main(["data", "check", str(out), "--dataset", "mevis"]) == 0
    ds = MeViS(out, "train", frames=3, size=32)
    masks = json.loads((out / "train" / "mask_dict.json").read_text())
    from pycocotools import mask as mask_utils

    row = ds.index[ds.index["kind"] == "multi-object"].iloc[3]
    i = int(ds.index.index[ds.index["kind"] == "multi-object"][3])
    parts = [mask_utils.decode({**masks[a][row["frame"] - 1], "counts": masks[a][row["frame"] - 1]["counts"].encode()})
             .astype(bool) for a in row["anno_ids"] if masks[a][row["frame"] - 1]]
    assert len(row["anno_ids"]) == 2 and np.array_equal(ds[i]["gt"][0].numpy(), np.logical_or.reduce(parts))
    leaving = ds.index[ds.index["kind"] == "leaving"]
    assert any(not ds[int(j)]["gt"][0].any() for j in leaving.index[-6:])  # gone from the view
    cfg = tmp_path / "motion.yaml"
    cfg.write_text(yaml.safe_dump({
        "base": str(ROOT / "experiments" / "cpu_small.yaml"), "name": "motion_tiny",
        "data": {"dataset": "mevis", "root": str(out), "test_split": "valid_u", "frames": 4, "size": 48,
                 "workers": 0},
        "train": {"epochs": 1, "batch_size": 8, "limit_batches": 4, "protocol": "strict"},
        "tracking": {"system_metrics": False, "overlays": 0}}))
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "run"), "--quiet",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}"]) == 0
    m = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert m["expressions"] == 9 and 0 <= m["JF"] <= 100
    assert {"multi-object/mIoU", "leaving/mIoU", "single/mIoU"} <= set(m)
