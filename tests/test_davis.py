"""Ref-DAVIS17 (issue 28): the layout ReferFormer's conversion writes, built by the test; the merge of a
video's expressions into one label map per annotator (ReferFormer's inference_davis.py); J, F and J&F
of the DAVIS-2017 unsupervised evaluation per annotator, averaged over the four; training, zero-shot
evaluation of a Ref-YouTube-VOS run, the toolkit's results folders as a submission, data check.

The reference is ``tests/davis_toolkit.py``: the toolkit's procedure written from its code, reading
label PNGs, independent of lvas.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from data_writers import write_davis, write_ytvos
from davis_toolkit import evaluate_unsupervised, referformer_merge
from lvas.cli import main
from lvas.data import DataError
from lvas.data.davis import RefDAVIS17

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def davis(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis")
    return root, write_davis(root)


def _videos(root: Path, folder: str = "valid") -> dict:
    return json.loads((root / "meta_expressions" / folder / "meta_expressions.json").read_text())["videos"]


def test_expressions_are_four_per_object_and_each_sample_knows_its_annotator(davis):
    """Expression i of a video is annotator i % 4 describing object i // 4; a sample's target is its
    object id in the annotation PNG (ReferFormer's training target); meta names the video's
    annotation folder; every listed frame of train is a training sample."""
    root, info = davis
    ds = RefDAVIS17(root, "valid", frames=3, size=32)
    videos = _videos(root)
    assert len(ds) == sum(len(v["expressions"]) * len(v["frames"]) for v in videos.values())
    for i in (0, 5, len(ds) - 1):
        item, r = ds[i], ds.index.iloc[i]
        d = item["meta"]["davis"]
        assert (d["annotator"], d["object"]) == (int(r["expression"]) % 4, int(r["expression"]) // 4)
        assert Path(d["annotations"]) == root / "valid" / "Annotations" / r["video"]
        want = info["labels"][("valid", r["video"], r["frame_name"])] == int(videos[r["video"]]["expressions"][r["expression"]]["obj_id"])
        assert np.array_equal(item["gt"][0].numpy(), want)
    train = RefDAVIS17(root, "train", frames=3, size=32)
    assert len(train) == sum(len(v["expressions"]) * len(v["frames"]) for v in _videos(root, "train").values())
    whole = RefDAVIS17(root, "valid", size=32, clips="video")
    assert len(whole) == sum(len(v["expressions"]) for v in videos.values()) and whole.variable_clips


def test_the_merge_is_referformers_argmax_in_any_arrival_order():
    """Per pixel: probabilities below 0.5 dropped, a background of 0.1, the first of equal maxima --
    here with ties between objects (probabilities on a coarse grid) and objects arriving shuffled."""
    from lvas.davis2017 import Merge

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 6))
        probs = rng.choice([0.1, 0.3, 0.5, 0.5, 0.75, 0.75, 0.9], size=(n, 1, 9, 11)).astype(np.float32)
        m = Merge.empty((9, 11))
        for o in rng.permutation(n):
            m.add(int(o), torch.from_numpy(probs[o, 0]))
        assert np.array_equal(m.label.numpy(), referformer_merge(probs)[0])


def _noisy_logits(truth: np.ndarray, rng, size: int) -> torch.Tensor:
    """(S, S) logits of a shifted, noisy version of ``truth`` on an S x S grid (some all negative)."""
    t = torch.from_numpy(np.roll(truth, int(rng.integers(-3, 4)), axis=1).astype(np.float32))
    grid = F.interpolate(t[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    logits = 6 * (grid - 0.5) + torch.from_numpy(rng.normal(0, 1.5, (size, size)).astype(np.float32))
    return logits - 20 if rng.random() < 0.1 else logits


def test_j_and_f_equal_the_davis_toolkit_per_annotator(davis, tmp_path):
    """Noisy logits for every (expression, frame) of the valid split fed to the davis17 evaluator; the
    same logits resized and merged as inference_davis.py does, written as label PNGs per annotator and
    scored by the toolkit's unsupervised evaluation: every annotator's J, F, J&F and the average equal.
    The fixture has void pixels, an object entering after the first frame (not an object of the
    toolkit), more predicted objects than annotated ones, and empty predictions."""
    from lvas.davis2017 import Davis17Evaluator

    root, info = davis
    rng = np.random.default_rng(3)
    ds = RefDAVIS17(root, "valid", frames=1, size=24)
    ev = Davis17Evaluator("strict")
    probs: dict = {}
    for i, r in enumerate(ds.index.itertuples()):
        item = ds[i]
        meta = item["meta"]
        h, w = meta["orig"]
        logits = _noisy_logits(item["gt"][0].numpy(), rng, 24)
        ev.process(None, item["gt"][0], {**meta, "frame_name": r.frame_name, "logits": logits})
        prob = F.interpolate(logits[None, None], size=(h, w), mode="bilinear", align_corners=False).sigmoid()[0, 0]
        probs.setdefault((meta["davis"]["annotator"], r.video), {}).setdefault(meta["davis"]["object"], {})[
            r.frame_name] = prob.numpy()
    ours = ev.compute()
    sequences = sorted(_videos(root))
    for a in range(4):
        for vid in sequences:
            objs = probs[(a, vid)]
            names = sorted(objs[0])
            labels = referformer_merge(np.stack([[objs[o][n] for n in names] for o in sorted(objs)]))
            for n, lab in zip(names, labels):
                p = tmp_path / f"anno_{a}" / vid / f"{n}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(lab).save(p)
        ref = evaluate_unsupervised(root / "valid" / "Annotations", sequences, tmp_path / f"anno_{a}")
        for k in ("J", "F", "JF"):
            assert ours[f"anno_{a}/{k}"] == pytest.approx(ref[k], abs=1e-10), (a, k)
    assert max(int(np.array(Image.open(p)).max()) for p in tmp_path.glob("anno_*/*/*.png")) == 4  # 4 proposals
    assert ours["objects"] == 2 * len(sequences)  # object 3 enters after the first frame: not scored
    for k in ("J", "F", "JF"):
        assert ours[k] == pytest.approx(np.mean([ours[f"anno_{a}/{k}"] for a in range(4)]), abs=1e-12)
    assert 5 < ours["JF"] < 95


def test_a_video_read_again_after_it_was_scored_is_refused(davis):
    from lvas.davis2017 import Davis17Evaluator

    root, _ = davis
    ds = RefDAVIS17(root, "valid", frames=1, size=16)
    ev = Davis17Evaluator("strict")
    first = ds.index.iloc[0]["video"]
    other = next(i for i, v in enumerate(ds.index["video"]) if v != first)
    for i in (0, other, 1):
        item = ds[i]
        call = lambda: ev.process(None, item["gt"][0], {**item["meta"], "logits": torch.zeros(16, 16)})  # noqa: E731
        if i == 1:
            with pytest.raises(ValueError, match=f"video {first}: its samples came again after it was scored"):
                call()
        else:
            call()


def _train_tiny(w: Path, dataset: str, root: Path, test_split: str) -> None:
    """`lvas train` of a CPU-small CSTM for three batches on ``dataset``; the run in ``w/run``."""
    exp = w / f"{dataset}.yaml"
    exp.write_text(yaml.safe_dump({
        "base": str(ROOT / "experiments" / "cpu_small.yaml"), "name": f"{dataset}_tiny",
        "data": {"dataset": dataset, "root": str(root), "test_split": test_split, "frames": 3, "size": 32,
                 "workers": 0},
        "model": {"text": {"hidden": 16, "embed_dim": 8}, "cmam": {"channels": 8}, "decoder": {"channels": 8}},
        "train": {"epochs": 1, "batch_size": 8, "limit_batches": 3, "protocol": "strict"},
        "tracking": {"system_metrics": False, "overlays": 0}}))
    assert main(["train", str(exp), "--run-dir", str(w / "run"), "--quiet", "--tracking-uri",
                 f"sqlite:///{w / 'ml.db'}"]) == 0


@pytest.fixture(scope="module")
def ytvos_run(tmp_path_factory):
    """A CPU-small CSTM trained one epoch on a Ref-YouTube-VOS fixture (the zero-shot source)."""
    w = tmp_path_factory.mktemp("ytvos_run")
    root = w / "ytvos"
    write_ytvos(root, n_train=6, n_valid=1)
    _train_tiny(w, "ytvos", root, "heldout")
    return w / "run" / "model.pt"


def test_a_ytvos_run_is_scored_zero_shot_and_its_results_folders_are_the_toolkits(davis, ytvos_run, tmp_path, capsys):
    """`lvas eval RUN --dataset davis --root ROOT` (no --split: Ref-DAVIS17's valid) prints J&F; the
    --submission zip holds anno_<k>/<video>/<frame>.png for every annotator and frame, and the
    toolkit on those folders gives, per annotator, the J&F lvas printed in --json."""
    root, _ = davis
    js = tmp_path / "m.json"
    assert main(["eval", str(ytvos_run), "--dataset", "davis", "--root", str(root), "--json", str(js), "--quiet"]) == 0
    m = json.loads(js.read_text())
    assert m["dataset"] == "davis" and {"JF", "anno_0/JF", "anno_3/JF", "P@0.5"} <= set(m)
    sub = tmp_path / "davis.zip"
    assert main(["eval", str(ytvos_run), "--dataset", "davis", "--root", str(root), "--submission", str(sub),
                 "--quiet"]) == 0
    videos = _videos(root)
    with zipfile.ZipFile(sub) as zf:
        names = set(zf.namelist())
        assert names == {f"anno_{a}/{v}/{f}.png" for a in range(4) for v, spec in videos.items() for f in spec["frames"]}
        zf.extractall(tmp_path / "res")
    im = Image.open(tmp_path / "res" / "anno_0" / sorted(videos)[0] / "00000.png")
    assert im.mode == "P" and im.size == (48, 36)
    for a in range(4):
        ref = evaluate_unsupervised(root / "valid" / "Annotations", sorted(videos), tmp_path / "res" / f"anno_{a}")
        for k in ("J", "F", "JF"):
            assert m[f"anno_{a}/{k}"] == pytest.approx(ref[k], abs=1e-9), (a, k)


def test_training_on_davis_scores_valid_with_the_davis17_evaluation(davis, tmp_path):
    """`lvas train` with data.dataset davis: trains on train, scores valid (test_metrics has the
    annotator-averaged J&F and the per-annotator ones)."""
    root, _ = davis
    _train_tiny(tmp_path, "davis", root, "valid")
    m = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert m["objects"] == 6 and 0 <= m["JF"] <= 100 and "anno_2/F" in m


@pytest.mark.parametrize("damage, message", [
    ("drop", "{vid}: 11 expressions; Ref-DAVIS17 lists 4 per object"),
    ("swap", "video {vid}, expression 2: object 2, but its group of 4 \\(from expression 0\\) describes object 1"),
])
def test_expressions_out_of_their_groups_are_one_line_naming_the_video(davis, tmp_path, damage, message):
    root, _ = davis
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(root, bad)
    meta = bad / "meta_expressions" / "valid" / "meta_expressions.json"
    videos = json.loads(meta.read_text())["videos"]
    vid = sorted(videos)[0]
    if damage == "drop":
        del videos[vid]["expressions"]["11"]
    else:
        videos[vid]["expressions"]["2"]["obj_id"] = "2"
    meta.write_text(json.dumps({"videos": videos}))
    with pytest.raises(DataError, match=message.format(vid=vid)) as e:
        RefDAVIS17(bad, "valid", size=16)
    assert str(meta) in str(e.value) and "\n" not in str(e.value)


def test_data_check_counts_and_names_each_problem(davis, tmp_path, capsys):
    root, _ = davis
    assert main(["data", "check", str(root), "--dataset", "davis"]) == 0
    out = capsys.readouterr().out
    assert "valid: objects" in out and "0 problem(s)" in out
    assert re.search(r"valid: expressions of an unannotated id +4\n", out)  # object 4 of the last valid video
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    vid = sorted(_videos(bad))[1]
    ann = bad / "valid" / "Annotations" / vid
    (bad / "valid" / "JPEGImages" / vid / "00001.jpg").unlink()
    Image.fromarray(np.zeros((10, 12), np.uint8), mode="P").save(ann / "00002.png")
    Image.fromarray(np.zeros((36, 48), np.uint8), mode="P").save(ann / "00099.png")
    assert main(["data", "check", str(bad), "--dataset", "davis"]) == 1
    out = capsys.readouterr().out
    assert f"{bad / 'valid' / 'JPEGImages' / vid / '00001.jpg'}: missing frame" in out
    assert f"{ann / '00002.png'}: 12x10 pixels; its frame is 48x36" in out
    assert f"{ann / '00099.png'}: annotated frame not listed" in out
