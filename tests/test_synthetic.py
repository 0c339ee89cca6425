import hashlib

import numpy as np

from lvas.data import A2DSentences
from lvas.data.check import check_a2d
from lvas.data.synthetic import make_clip, generate


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path):
    generate(tmp_path / "a", videos=6, progress=False)
    generate(tmp_path / "b", videos=6, progress=False)
    generate(tmp_path / "c", videos=6, seed=1, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_query_kinds_need_motion_or_appearance():
    for i in range(40):
        clip = make_clip(0, i, frames=8, size=64)
        target, distractor = clip["actors"][0], clip["actors"][1]
        if clip["kind"] == "motion":
            assert target.appearance() == distractor.appearance() and target.action != distractor.action
        else:
            assert target.appearance() != distractor.appearance() and target.action == distractor.action
        assert sum(a.appearance() == target.appearance() and a.action == target.action
                   for a in clip["actors"]) == 1  # the query names exactly one actor
        # frames differ visibly: a moving actor shifts by several pixels per frame
        if any(a.action != "standing still" for a in clip["actors"]):
            assert np.abs(clip["frames"][0].astype(int) - clip["frames"][-1].astype(int)).max() > 50
        # ground truth: the referred sprite's visible silhouette in the middle frame
        gt = clip["masks"][clip["target"], 0]
        assert gt.sum() > 20


def test_written_in_the_a2d_layout_and_loaded_by_the_a2d_loader(tmp_path):
    counts = generate(tmp_path / "s", videos=10, progress=False)
    assert counts == {"train": 16, "test": 4, "appearance": 10, "motion": 10}
    rep = check_a2d(tmp_path / "s", dataset="synth")
    assert rep.ok, rep.problems
    assert rep.counts["samples (train, motion)"] == rep.counts["samples (train, appearance)"] == 8
    ds = A2DSentences(tmp_path / "s", "test", frames=8, frame_stride=1, size=64)
    item = ds[0]
    assert item["clip"].shape == (3, 8, 64, 64) and item["meta"]["frames"] == list(range(1, 9))
    assert item["meta"]["kind"] in ("appearance", "motion")
    clip = make_clip(0, int(item["meta"]["video"][5:]))
    assert np.array_equal(item["gt"][0].numpy(), clip["masks"][4, item["meta"]["instance"]])
