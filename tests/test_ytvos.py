"""Ref-YouTube-VOS: the loader on a tiny dataset written in the public layout, the DAVIS region J and
boundary F against a brute-force reading of their definition, J&F per expression, and the challenge
submission zip written by `lvas eval --submission`."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from data_writers import level, write_palette_png, write_ytvos
from lvas.cli import main
from lvas.data.errors import DataError
from lvas.data.ytvos import RefYouTubeVOS, heldout_videos
from lvas.metrics import VideoJF, boundary_f, boundary_map, region_j

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ytvos(tmp_path_factory):
    root = tmp_path_factory.mktemp("ytvos")
    return root, write_ytvos(root)


def test_splits_are_disjoint_and_fixed_by_the_video_ids(ytvos):
    root, _ = ytvos
    train = RefYouTubeVOS(root, "train", size=32)
    held = RefYouTubeVOS(root, "heldout", size=32, vocab=train.vocab)
    tv, hv = set(train.videos()), set(held.videos())
    assert hv and tv and not tv & hv and len(tv | hv) == 10
    assert heldout_videos(sorted(tv | hv)) == sorted(hv)
    assert heldout_videos(sorted(tv | hv, reverse=True)) == sorted(hv)  # order does not matter
    # training: frames where the object is annotated (object 2 misses the first listed frame);
    # evaluation: every listed frame of every expression
    assert len(train) == len(tv) * (5 + 4)
    assert len(held) == len(hv) * 2 * 5
    valid = RefYouTubeVOS(root, "valid", size=32, vocab=train.vocab)
    assert len(valid) == 2 * 2 * 5 and not valid.has_masks


def test_an_item_reads_its_object_and_a_clip_steps_over_the_listed_frames(ytvos):
    root, info = ytvos
    ds = RefYouTubeVOS(root, "heldout", frames=2, frame_stride=1, size=24)
    rows = ds.index.reset_index(drop=True)
    i = int(rows.index[(rows["expression"] == "1") & (rows["frame"] == 3)][0])
    item = ds[i]
    vid, name = item["meta"]["video"], item["meta"]["frame_name"]
    assert name == info["names"][2] and item["meta"]["expression"] == "1"
    assert torch.equal(item["gt"][0], torch.from_numpy(info["truth"][(vid, name, 2)]))
    assert item["meta"]["frames"] == [2, 3]  # the listed frame before (file 00005), then the target
    levels = item["clip"].mean(dim=(0, 2, 3)) * 255  # flat grey frames: level(k) of listed frame k
    assert torch.allclose(levels, torch.tensor([level(2), level(3)], dtype=torch.float32), atol=1.5)
    first = ds[int(rows.index[(rows["expression"] == "1") & (rows["frame"] == 1)][0])]
    assert first["meta"]["frames"] == [1, 1] and not first["gt"][0].any()  # clamped; object absent there


def test_bad_files_are_named(ytvos, tmp_path):
    root, _ = ytvos
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    meta = bad / "meta_expressions" / "train" / "meta_expressions.json"
    data = json.loads(meta.read_text())
    data["videos"]["../../etc"] = data["videos"].pop(sorted(data["videos"])[0])
    meta.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"video #1: video id is not a plain file name") as e:
        RefYouTubeVOS(bad, "train")
    assert str(meta) in str(e.value) and "etc" not in str(e.value)  # named by place, never quoted
    meta.write_text("{not json")
    with pytest.raises(DataError, match="cannot be parsed as JSON"):
        RefYouTubeVOS(bad, "train")
    with pytest.raises(DataError, match="no split 'val'"):
        RefYouTubeVOS(root, "val")
    shutil.rmtree(bad)
    shutil.copytree(root, bad)
    ds = RefYouTubeVOS(bad, "heldout", size=24)
    png = bad / "train" / "Annotations" / ds.index.iloc[0]["video"] / f"{ds.index.iloc[0]['frame_name']}.png"
    Image.new("RGB", (48, 36)).save(png)
    with pytest.raises(DataError, match="mode RGB; expected a palette"):
        ds[0]


def _bmap_by_definition(m):
    """seg2bmap read literally: pixel (y, x) is boundary if it differs from its east, south or
    south-east neighbour, where neighbours outside the frame are background -- except that the last
    row looks east only, the last column south only, and the corner never counts."""
    h, w = m.shape
    at = lambda y, x: bool(m[y, x]) if y < h and x < w else False  # noqa: E731
    b = np.zeros_like(m, dtype=bool)
    for y in range(h):
        for x in range(w):
            if y == h - 1 and x == w - 1:
                continue
            if y == h - 1:
                b[y, x] = at(y, x) != at(y, x + 1)
            elif x == w - 1:
                b[y, x] = at(y, x) != at(y + 1, x)
            else:
                b[y, x] = at(y, x) != at(y, x + 1) or at(y, x) != at(y + 1, x) or at(y, x) != at(y + 1, x + 1)
    return b


def _f_by_definition(pred, gt, r):
    pb, gb = _bmap_by_definition(pred), _bmap_by_definition(gt)
    pts = lambda b: np.argwhere(b)  # noqa: E731
    def matched(a, other):
        o = pts(other)
        return sum(any((y - oy) ** 2 + (x - ox) ** 2 <= r * r for oy, ox in o) for y, x in pts(a))
    if not pb.any() or not gb.any():
        p, rc = (1.0 if not pb.any() else 0.0), (1.0 if not gb.any() else 0.0)
    else:
        p, rc = matched(pb, gb) / pb.sum(), matched(gb, pb) / gb.sum()
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


def test_boundary_f_follows_its_definition():
    rng = np.random.default_rng(0)
    sq = np.zeros((20, 30), bool)
    sq[4:12, 5:15] = True
    assert boundary_f(sq, sq) == 1.0 and region_j(sq, sq) == 1.0
    empty = np.zeros_like(sq)
    assert boundary_f(empty, empty) == 1.0 and region_j(empty, empty) == 1.0
    assert boundary_f(empty, sq) == 0.0 and boundary_f(sq, empty) == 0.0 and region_j(empty, sq) == 0.0
    # tolerance: ceil(0.008 * diagonal) = 1 px here; a 1-px shift matches every boundary pixel, 3 px does not
    assert boundary_f(np.roll(sq, 1, axis=1), sq) == 1.0
    assert boundary_f(np.roll(sq, 3, axis=1), sq) < 1.0
    assert boundary_f(np.roll(sq, 3, axis=1), sq, tolerance=3) == 1.0  # >= 1: a pixel count
    for trial in range(12):
        h, w = int(rng.integers(6, 22)), int(rng.integers(6, 22))
        a, b = rng.random((h, w)) < 0.3, rng.random((h, w)) < 0.3
        if trial % 3 == 0:  # touching every edge
            a[:, -1] = a[-1, :] = True
        assert np.array_equal(boundary_map(a), _bmap_by_definition(a))
        r = int(np.ceil(0.008 * np.hypot(h, w)))
        assert boundary_f(a, b) == pytest.approx(_f_by_definition(a, b, r), abs=1e-12)
        assert boundary_f(a, b, tolerance=3) == pytest.approx(_f_by_definition(a, b, 3), abs=1e-12)
        assert region_j(a, b) == pytest.approx((a & b).sum() / (a | b).sum())


def test_j_and_f_average_each_expression_over_its_frames_then_over_expressions():
    sq = np.zeros((10, 10), bool)
    sq[2:6, 2:6] = True
    acc = VideoJF()
    acc.add("v/0", sq, sq)  # one frame, perfect
    for _ in range(3):  # three frames, all wrong
        acc.add("v/1", np.zeros_like(sq), sq)
    out = acc.compute()
    assert out["J"] == pytest.approx(50.0) and out["F"] == pytest.approx(50.0)  # not 25: per expression first
    assert out["J&F"] == pytest.approx(50.0) and out["expressions"] == 2


@pytest.fixture(scope="module")
def trained(ytvos, tmp_path_factory):
    root, _ = ytvos
    w = tmp_path_factory.mktemp("ytvos_run")
    exp = w / "lbdt_ytvos.yaml"
    exp.write_text(yaml.safe_dump({
        "base": str(ROOT / "experiments" / "lbdt_cpu.yaml"), "name": "lbdt_ytvos_tiny",
        "data": {"dataset": "ytvos", "root": str(root), "test_split": "heldout", "frame_stride": 1, "size": 32,
                 "workers": 0},
        "model": {"bridge": {"channels": 8, "heads": 2}, "decoder": {"channels": 8}},
        "train": {"epochs": 1, "batch_size": 8, "limit_batches": 3},
        "tracking": {"system_metrics": False, "overlays": 0}}))
    uri = f"sqlite:///{w / 'ml.db'}"
    assert main(["train", str(exp), "--run-dir", str(w / "run"), "--quiet", "--tracking-uri", uri]) == 0
    return {"w": w, "exp": exp, "ck": w / "run" / "model.pt", "uri": uri, "root": root}


def test_training_scores_j_and_f_per_expression(trained):
    from mlflow import MlflowClient

    m = json.loads((trained["w"] / "run" / "test_metrics.json").read_text())
    assert m["expressions"] == 2 * 1 and 0.0 <= m["J"] <= 100.0 and 0.0 <= m["F"] <= 100.0  # 1 held-out video
    assert m["JF"] == pytest.approx((m["J"] + m["F"]) / 2)
    protocols = json.loads((trained["w"] / "run" / "test_protocols.json").read_text())
    assert {"paper", "lbdt", "strict"} <= set(protocols) and all("JF" in p for p in protocols.values())
    run = MlflowClient(trained["uri"]).search_runs([MlflowClient(trained["uri"]).get_experiment_by_name(
        "lbdt_ytvos_tiny").experiment_id])[0]
    assert run.data.metrics["test/JF"] == pytest.approx(m["JF"])
    assert "protocol/strict/JF" in run.data.metrics


def test_eval_writes_the_submission_layout(trained, tmp_path, capsys):
    out = tmp_path / "sub.zip"
    assert main(["eval", str(trained["ck"]), "--split", "valid", "--submission", str(out), "--quiet"]) == 0
    assert "20 masks of 4 expressions in 2 videos" in capsys.readouterr().out
    meta = json.loads((trained["root"] / "meta_expressions" / "valid" / "meta_expressions.json").read_text())
    want = {f"Annotations/{v}/{e}/{f}.png" for v, spec in meta["videos"].items()
            for e in spec["expressions"] for f in spec["frames"]}
    with zipfile.ZipFile(out) as zf:
        assert set(zf.namelist()) == want
        for name in sorted(want)[:3]:
            im = Image.open(io.BytesIO(zf.read(name)))
            assert im.mode == "L" and im.size == (48, 36)
            assert set(np.unique(np.asarray(im))) <= {0, 255}
    assert not list(tmp_path.glob(".*tmp*"))  # written through a temporary and renamed


def test_a_split_without_masks_is_not_scored(trained, capsys):
    assert main(["eval", str(trained["ck"]), "--split", "valid", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--split: the 'valid' split has no public masks" in err and "--submission" in err
    assert main(["train", str(trained["exp"]), "data.test_split=valid", "--run-dir", str(trained["w"] / "r2"),
                 "--quiet", "--tracking-uri", trained["uri"]]) == 2
    assert "data.test_split: the 'valid' split has no public masks" in capsys.readouterr().err
    # LBDT drops the last incomplete batch (as its release): a split smaller than one batch is refused
    assert main(["train", str(trained["exp"]), "train.batch_size=500", "--run-dir", str(trained["w"] / "r3"),
                 "--quiet", "--tracking-uri", trained["uri"]]) == 2
    assert "train.drop_last: the 81 training samples make no full batch of 500" in capsys.readouterr().err


def test_annotation_pngs_keep_object_ids(tmp_path):
    ids = np.zeros((5, 6), np.uint8)
    ids[1:3, 1:4] = 2
    write_palette_png(tmp_path / "a.png", ids)
    from lvas.data.ytvos import read_object_mask

    assert np.array_equal(read_object_mask(tmp_path / "a.png", 2), ids == 2)
    assert not read_object_mask(tmp_path / "a.png", 1).any()


def test_data_check_counts_and_names_problems(ytvos, tmp_path, capsys):
    import shutil

    root, info = ytvos
    assert main(["data", "check", str(root), "--dataset", "ytvos", "--frames", "2"]) == 0
    out = capsys.readouterr().out
    assert "train: videos" in out and "held-out videos (heldout)" in out and "0 problem(s)" in out
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    (bad / "train" / "JPEGImages" / "t000vid" / "00010.jpg").unlink()
    (bad / "train" / "Annotations" / "t001vid" / "00005.png").unlink()
    assert main(["data", "check", str(bad), "--dataset", "ytvos"]) == 1
    out = capsys.readouterr().out
    assert "2 problem(s)" in out
    assert f"{bad}/train/JPEGImages/t000vid/00010.jpg: missing frame" in out
    assert f"{bad}/train/Annotations/t001vid/00005.png: missing annotation PNG" in out


def test_the_ytvos_sweep_reports_lbdts_published_jf_beside_ours(trained, tmp_path):
    """sweeps/table_ytvos.yaml as shipped (LBDT-4 at paper size, validated), then run small: its report
    puts LBDT's published valid-server J&F 49.38 beside our held-out J&F, and says they differ in videos."""
    import pandas as pd

    shipped = ROOT / "sweeps" / "table_ytvos.yaml"
    assert main(["sweep", str(shipped), "--dry-run"]) == 0
    tiny = tmp_path / "table_ytvos.yaml"
    spec = yaml.safe_load(shipped.read_text())
    spec.update(base=str(trained["exp"]), seeds=2, overrides={"train.epochs": 1, "train.limit_batches": 2})
    tiny.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    assert main(["sweep", str(tiny), "--quiet", "--tracking-uri", uri, "--out", str(tmp_path / "sweeps")]) == 0
    assert main(["report", str(tiny), "--tracking-uri", uri, "--out", str(tmp_path / "reports"), "--no-figures"]) == 0
    csv = pd.read_csv(tmp_path / "reports" / "table_ytvos" / "table_ytvos.csv")
    published = csv[csv["source"] == "published"].set_index("row")
    ours = csv[csv["source"] == "lvas"].set_index("row")
    assert published.loc["LBDT-4 CVPR2022 (valid, server)", "JF"] == pytest.approx(49.38)
    assert 0 <= ours.loc["LBDT-4 (lvas)", "JF"] <= 100 and ours.loc["LBDT-4 (lvas)", "n"] == 2
    delta = csv[csv["source"] == "Δ lvas − paper"].set_index("row")
    assert delta.loc["LBDT-4 (lvas)", "JF"] == pytest.approx(ours.loc["LBDT-4 (lvas)", "JF"] - 49.38)
    md = (tmp_path / "reports" / "table_ytvos" / "table_ytvos.md").read_text()
    assert "held-out 10 % of train; published: valid server" in md
