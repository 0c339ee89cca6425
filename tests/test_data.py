import numpy as np
import pytest
import torch

from data_writers import level, write_a2d, write_jhmdb
from lvas.cli import main
from lvas.data import A2DSentences, DataError, JHMDBSentences, collate
from lvas.data.a2d import build_index, prepare_frames, read_instance_mask
from lvas.data.check import check_a2d, check_jhmdb
from lvas.data.clips import Letterbox, clip_indices
from lvas.data.jhmdb import choose_frames


@pytest.fixture
def a2d(tmp_path):
    root = tmp_path / "a2d"
    masks = write_a2d(root)
    return root, masks


def frame_numbers(clip: torch.Tensor, resized) -> list[int]:
    """Read the frame numbers back from flat grey frames (3, T, S, S)."""
    h, w = resized
    return [int(round(float(clip[0, t, :h, :w].mean()) * 255 / 10)) for t in range(clip.shape[1])]


def test_index_follows_the_public_release_quirks(a2d):
    root, _ = a2d
    train, notes = build_index(root, "train")
    # v_missed excluded; the "1 (copy)" row read as instance 1 and dropped as a duplicate
    assert set(train["video"]) == {"v_train"}
    assert sorted(zip(train["frame"], train["instance"])) == [(3, 0), (3, 1), (9, 1)]
    assert any("1 (copy)" in n for n in notes) and any("duplicate" in n for n in notes)
    test, _ = build_index(root, "test")
    assert list(zip(test["video"], test["frame"], test["instance"])) == [("v_test", 1, 0)]


def test_masks_round_trip_exactly_including_single_instance(a2d):
    root, masks = a2d
    ds = A2DSentences(root, "train", frames=4, frame_stride=2, size=64)
    seen = 0
    for i in range(len(ds)):
        item = ds[i]
        ids, ms = masks[(item["meta"]["video"], item["meta"]["frame"])]
        want = ms[ids.index(item["meta"]["instance"])]
        assert np.array_equal(item["gt"][0].numpy(), want)
        seen += 1
    assert seen == 3
    single = read_instance_mask(root / "text_annotations/a2d_annotation_with_instances/v_test/00001.h5", 0)
    assert np.array_equal(single, masks[("v_test", 1)][1][0])


def test_clip_frames_are_centred_and_clamped(a2d):
    root, _ = a2d
    ds = A2DSentences(root, "train", frames=4, frame_stride=3, size=64)
    by_frame = {ds[i]["meta"]["frame"]: ds[i] for i in range(len(ds))}
    item = by_frame[9]
    assert item["meta"]["frames"] == [3, 6, 9, 12]  # target at index T // 2
    assert frame_numbers(item["clip"], item["meta"]["resized"]) == [3, 6, 9, 12]
    item = by_frame[3]
    assert item["meta"]["frames"] == [1, 1, 3, 6]  # clamped at the start
    assert frame_numbers(item["clip"], item["meta"]["resized"]) == [1, 1, 3, 6]
    assert clip_indices(11, 12, 4, 2) == [7, 9, 11, 12]


def test_letterbox_pads_and_inverts(a2d):
    root, masks = a2d
    ds = A2DSentences(root, "test", frames=2, frame_stride=1, size=32, input="letterbox")
    item = ds[0]
    assert item["clip"].shape == (3, 2, 32, 32) and item["meta"]["resized"] == (24, 32)
    assert item["clip"][:, :, 24:].abs().sum() == 0  # padding below the 48x64 -> 24x32 frame
    lb = Letterbox(item["meta"]["orig"], item["meta"]["resized"], 32)
    back = lb.invert(item["target"][0]) > 0.5
    gt = masks[("v_test", 1)][1][0]
    assert back.shape == gt.shape
    assert (back.numpy() == gt).mean() > 0.97


def test_stretch_and_released_inputs_fill_the_grid(a2d):
    root, masks = a2d
    gt = masks[("v_test", 1)][1][0]
    for name in ("stretch", "released"):
        item = A2DSentences(root, "test", frames=2, frame_stride=1, size=32, input=name)[0]
        assert item["clip"].shape == (3, 2, 32, 32) and item["meta"]["resized"] == (32, 32)
        assert item["clip"][:, :, 24:].abs().sum() > 0  # no padding
        back = Letterbox(item["meta"]["orig"], (32, 32), 32).invert(item["target"][0]) > 0.5
        assert (back.numpy() == gt).mean() > 0.95, name
    # the released pipeline resizes frames with Pillow's bilinear filter on the uint8 image
    from PIL import Image

    from lvas.data.a2d import read_jpeg

    item = A2DSentences(root, "test", frames=2, frame_stride=1, size=32, input="released")[0]
    frame = read_jpeg(A2DSentences(root, "test").layout.frame("v_test", item["meta"]["frames"][1]))
    pil = np.array(Image.fromarray(frame.permute(1, 2, 0).numpy()).resize((32, 32), Image.BILINEAR))
    assert torch.equal(item["clip"][:, 1], torch.from_numpy(pil).permute(2, 0, 1).float() / 255)


def test_released_clip_start_differs_only_near_the_start():
    from lvas.data.clips import clip_indices

    assert clip_indices(20, 40, 8, 2, "released") == clip_indices(20, 40, 8, 2) == [12, 14, 16, 18, 20, 22, 24, 26]
    assert clip_indices(5, 40, 8, 2) == [1, 1, 1, 3, 5, 7, 9, 11]  # centred, clamped: target at position 4
    assert clip_indices(5, 40, 8, 2, "released") == [1, 3, 5, 7, 9, 11, 13, 15]  # window from frame 1: position 4 is 9
    assert clip_indices(39, 40, 8, 2, "released")[-3:] == [40, 40, 40]  # clamped at the end


def test_bad_files_give_one_clear_error_naming_them(a2d, tmp_path):
    root, _ = a2d
    with pytest.raises(DataError, match="nowhere: dataset folder not found"):
        A2DSentences(tmp_path / "nowhere")
    h5 = root / "text_annotations/a2d_annotation_with_instances/v_train/00009.h5"
    with pytest.raises(DataError, match=r"00009.h5: instance 0 is not annotated in this frame"):
        read_instance_mask(h5, 0)
    ds = A2DSentences(root, "train", frames=2, frame_stride=1, size=32)
    (root / "Release/frames/v_train/00009.jpg").write_bytes(b"garbage")
    (root / "Release/frames/v_train/00002.jpg").unlink()
    h5_3 = root / "text_annotations/a2d_annotation_with_instances/v_train/00003.h5"
    h5_3.write_bytes(b"not hdf5")
    errors = []
    for i in range(len(ds)):
        with pytest.raises(DataError) as e:
            ds[i]
        errors.append(str(e.value))
    assert any("00009.jpg: corrupt frame image" in m for m in errors)
    assert any("00002.jpg: missing frame" in m for m in errors)
    ds.skip_bad = True
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["skipped"] == 3
    with pytest.raises(DataError, match="00003.h5: corrupt"):
        build_index(root, "train")


def test_check_lists_every_problem_with_its_file(a2d, capsys):
    root, _ = a2d
    rep = check_a2d(root)
    assert rep.ok, rep.problems
    assert rep.counts["samples (train)"] == 3 and rep.counts["samples (test)"] == 1
    assert rep.counts["videos (train)"] == 2 and rep.counts["missed videos (excluded)"] == 1
    (root / "Release/frames/v_test/00001.jpg").write_bytes(b"garbage")
    (root / "text_annotations/a2d_annotation.txt").open("a").write("v_test,7,a ghost\n")
    rep = check_a2d(root)
    assert any("v_test/00001.jpg: corrupt frame image" in p for p in rep.problems)
    assert any("instance 7 of query 'a ghost' is absent" in p for p in rep.problems)
    assert main(["data", "check", str(root), "--dataset", "a2d"]) == 1
    out = capsys.readouterr().out
    assert "2 problem(s)" in out and "Traceback" not in out, out


def test_prepare_extracts_mp4_frames_resumably(tmp_path):
    root = tmp_path / "a2d"
    write_a2d(root, n_frames=6, frames_as="mp4")
    rep = check_a2d(root)
    assert any("no frames (run `lvas data prepare a2d ROOT`)" in p for p in rep.problems)
    assert prepare_frames(root, progress=False) == {"extracted": 3, "skipped": 0, "refused": []}
    frames = sorted((root / "Release/frames/v_train").glob("*.jpg"))
    assert [f.name for f in frames] == [f"{n:05d}.jpg" for n in range(1, 7)]
    assert prepare_frames(root, progress=False) == {"extracted": 0, "skipped": 3, "refused": []}
    item = A2DSentences(root, "train", frames=3, frame_stride=1, size=64)[0]
    got = [float(item["clip"][0, t, :48, :64].mean()) * 255 for t in range(3)]
    want = [level(n) for n in item["meta"]["frames"]]
    assert np.allclose(got, want, atol=4)  # lossy video codec


def test_jhmdb_fixed_samples_and_trailing_frames_without_masks(tmp_path):
    root = tmp_path / "jhmdb"
    truth = write_jhmdb(root)
    ds = JHMDBSentences(root, frames=4, frame_stride=1, size=64)
    assert choose_frames(10) == [2, 5, 8] and choose_frames(7) == [2, 4, 5]
    assert list(zip(ds.index["video_id"], ds.index["frame"])) == [
        ("vid_a", 2), ("vid_a", 5), ("vid_a", 8), ("vid_b", 2), ("vid_b", 4), ("vid_b", 5)]
    assert ds.samples_path == root / "jhmdb_samples.csv" and ds.samples_path.is_file()
    for i in range(len(ds)):
        item = ds[i]
        vid, f = item["meta"]["video"], item["meta"]["frame"]
        assert np.array_equal(item["gt"][0].numpy(), truth[vid][:, :, f - 1] > 0)
        assert frame_numbers(item["clip"], item["meta"]["resized"])[2] == f
    # the stored file wins over the rule: edit it and the samples follow
    ds.samples_path.write_text("video_id,frame\nvid_b,6\n")
    ds2 = JHMDBSentences(root, frames=4, frame_stride=1, size=64)
    assert len(ds2) == 1
    assert check_jhmdb(root).counts["videos with unmasked trailing frames"] == 1
    (root / "puppet_mask/run/vid_b/puppet_mask.mat").write_bytes(b"junk")
    with pytest.raises(DataError, match="vid_b/puppet_mask.mat: corrupt .mat file"):
        ds2[0]
    with pytest.raises(DataError, match="vid_b/puppet_mask.mat: corrupt"):
        ds2[0]


def test_video_ids_that_leave_the_root_are_refused(a2d, tmp_path):
    """A crafted annotation or videoset cannot make lvas read a frame outside the dataset root."""
    root, _ = a2d
    ann = root / "text_annotations" / "a2d_annotation.txt"
    ann.write_text(ann.read_text() + "../../outside,1,the man\n")
    line = len(ann.read_text().splitlines())
    with pytest.raises(DataError, match=rf"a2d_annotation.txt: line {line}: video_id is not a plain file name") as e:
        A2DSentences(root, "train", frames=2, size=32)
    assert "outside" not in str(e.value)
    jroot = tmp_path / "jhmdb"
    write_jhmdb(jroot)
    jann = jroot / "jhmdb_annotation.txt"
    jann.write_text(jann.read_text() + "..,a man\n")
    line = len(jann.read_text().splitlines())
    with pytest.raises(DataError, match=rf"jhmdb_annotation.txt: line {line}: video_id is not a plain file name"):
        JHMDBSentences(jroot)
