"""Protocol ``coco`` (issue 23 §1): A2D "mAP" as MTTR, ReferFormer, SgMg and ReferDINO compute it.

The reference here is written from their procedure, independently of lvas: the ground-truth COCO
JSON built the way MTTR's ``create_gt_in_coco_format.py`` builds it (one image per query and
annotated frame where its instance appears, read straight from the ``.h5`` files with h5py: the
instance list, ``reMask`` transposed, one annotation, category 1, iscrowd 0), the predictions
post-processed as their ``postprocessing.py`` does (sigmoid > 0.5 on the input grid, un-padded,
nearest resize to the original frame), ``COCO.loadRes`` + ``COCOeval(iouType="segm")`` with
``useCats = 0`` and ``stats[0]``, and their P@k / overall / mean IoU (top-scoring mask, strict ``>``,
smoothing 1e-6). lvas reads the same fixture through its own A2D reader and scores the same logits
with ``Scores("coco")``: every number must be equal.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from data_writers import rect_mask, write_h5

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under numpy 2
from tools import need_module  # noqa: E402

need_module("pycocotools", "pycocotools not installed (pip install 'lvas[coco]')")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

H, W, S, N_FRAMES = 48, 64, 64, 10


def _write_fixture(root: Path, videos: int = 8, seed: int = 0) -> None:
    """An A2D-layout test split: each video 1-3 instances (one query each), 2-3 annotated frames in
    which some instances are absent."""
    rng = np.random.default_rng(seed)
    rel, ta = root / "Release", root / "text_annotations"
    (rel / "frames").mkdir(parents=True)
    ta.mkdir()
    rows, csv_rows = [], []
    for v in range(videos):
        vid = f"vid{v:02d}"
        n_inst = int(rng.integers(1, 4))
        frames = sorted(rng.choice(np.arange(2, N_FRAMES), size=int(rng.integers(2, 4)), replace=False).tolist())
        csv_rows.append(f"{vid},{10 + v},0,0,{H},{W},{N_FRAMES},{len(frames)},1")
        for i in range(n_inst):
            rows.append(f"{vid},{i},the thing number {i} in video {v}")
        if v == 0:  # as A2D's T6bNPuKV-wY: an instance_id that is not an integer, with words of its own
            rows.append(f"{vid},0 (copy),the copied thing in video {v}")
        for f in frames:
            present = [i for i in range(n_inst) if rng.random() < 0.8] or [0]
            masks = []
            for _ in present:
                y0, x0 = int(rng.integers(0, H - 12)), int(rng.integers(0, W - 12))
                masks.append(rect_mask(H, W, y0, x0, y0 + int(rng.integers(6, 20)), x0 + int(rng.integers(6, 24))))
            write_h5(ta / "a2d_annotation_with_instances" / vid / f"{f:05d}.h5", present, masks)
        d = rel / "frames" / vid
        d.mkdir()
        for n in range(1, N_FRAMES + 1):
            Image.fromarray(np.full((H, W, 3), 10 * n, np.uint8)).save(d / f"{n:05d}.jpg", quality=95)
    (rel / "videoset.csv").write_text("\n".join(csv_rows) + "\n")
    (ta / "a2d_annotation.txt").write_text("video_id,instance_id,query\n" + "\n".join(rows) + "\n")
    (ta / "a2d_missed_videos.txt").write_text("")


def _logits(truth: np.ndarray, resized: tuple[int, int], key: str, seed: int = 1) -> torch.Tensor:
    """Deterministic (S, S) logits for one sample: its mask shifted and blurred by noise, on the
    frame's place in the input grid (top-left (h, w)), padding noise elsewhere."""
    rng = np.random.default_rng([seed, *key.encode()])
    h, w = resized
    g = F.interpolate(torch.from_numpy(truth)[None, None].float(), size=(h, w), mode="nearest")[0, 0]
    g = torch.roll(g, shifts=(int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), dims=(0, 1))
    out = torch.from_numpy(rng.normal(-2.5, 1.0, (S, S)).astype(np.float32))
    out[:h, :w] += 5.0 * g * float(rng.uniform(0.4, 1.5))
    return out


def _mttr_metrics(images: list[tuple[str, np.ndarray]], detections: list[dict], folder: Path) -> dict[str, float]:
    """MTTR's evaluation of ``detections`` ({image_id, segmentation, score}, in the order their trainer
    appends them) against ``images`` ((string image id, ground-truth mask) in the order their
    ground-truth script writes them): the JSON ground truth read by ``COCO``, ``loadRes``, COCOeval
    (segm, useCats 0, stats[0:3]); then their precision/IoU loop: every ground-truth image, the
    prediction ``sorted(..., key=score)[-1]``, their torch ``compute_iou`` (float32, EPS 1e-6) and a
    strict ``>`` against Python floats."""
    annotations = []
    for image_id, mask in images:
        r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        r["counts"] = r["counts"].decode("ascii")
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "segmentation": r,
                            "area": float(mask_utils.area(r)), "bbox": [0, 0, 1, 1], "iscrowd": 0})
    gt_json = folder / "test_annotations_in_coco_format.json"
    gt_json.write_text(json.dumps({"categories": [{"id": 1, "name": "dummy_class"}],
                                   "images": [{"id": i, "height": m.shape[0], "width": m.shape[1]} for i, m in images],
                                   "annotations": annotations}))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_json))
        coco_pred = coco_gt.loadRes([{**d, "category_id": 1} for d in detections])
        ev = COCOeval(coco_gt, coco_pred, iouType="segm")
        ev.params.useCats = 0
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {"mAP": 100 * ev.stats[0], "AP50": 100 * ev.stats[1], "AP75": 100 * ev.stats[2]}
    hits = {t: 0 for t in (0.5, 0.6, 0.7, 0.8, 0.9)}
    inter_sum = union_sum = 0.0
    ious = []
    for image_id in coco_gt.imgs.keys():
        gt_mask = torch.tensor(mask_utils.decode(coco_gt.imgToAnns[image_id][0]["segmentation"])).unsqueeze(0)
        top = sorted(coco_pred.imgToAnns[image_id], key=lambda a: a["score"])[-1]
        pm = torch.tensor(mask_utils.decode(top["segmentation"])).unsqueeze(0).int()
        inter_t, union_t = (pm & gt_mask).float().sum((1, 2)), (pm | gt_mask).float().sum((1, 2))
        iou_t = (inter_t + 1e-6) / (union_t + 1e-6)
        iou, inter, union = iou_t.item(), inter_t.item(), union_t.item()
        for t in hits:
            hits[t] += iou > t
        inter_sum, union_sum = inter_sum + inter, union_sum + union
        ious.append(iou)
    out.update({f"P@{t}": 100 * c / len(ious) for t, c in hits.items()})
    out["oIoU"], out["mIoU"], out["n"] = 100 * inter_sum / union_sum, 100 * float(np.mean(ious)), len(ious)
    return out


def _rle(m: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def _reference(root: Path, preds: dict[tuple[str, int, int], list[tuple[torch.Tensor, tuple[int, int]]]],
               top1: bool, scores: dict | None = None) -> dict[str, float]:
    """MTTR's procedure on ``preds``: (video, frame, instance) -> [(logits (S, S), resized (h, w))];
    ``scores``: the same key -> a score per candidate, where a model gives them (else the mean
    probability inside the mask)."""
    ta = root / "text_annotations"
    import csv

    queries = list(csv.DictReader((ta / "a2d_annotation.txt").open()))
    images, detections = [], []
    for q in queries:  # their create_gt_in_coco_format.py
        vid, raw = q["video_id"], q["instance_id"]
        for p in sorted((ta / "a2d_annotation_with_instances" / vid).glob("*.h5")):
            with h5py.File(p) as f:
                instances = list(np.asarray(f["instance"]).ravel())
                try:
                    k = instances.index(int(raw))
                except ValueError:  # absent from this frame, or an id that is not an integer ("1 (copy)")
                    continue
                mask = (np.asarray(f["reMask"])[k] if len(instances) > 1 else np.asarray(f["reMask"])).T
            frame = int(p.stem)
            image_id = f"v_{vid}_f_{frame}_i_{raw}"
            assert image_id not in dict(images)
            images.append((image_id, mask))
            cands = []
            for c, (logits, (h, w)) in enumerate(preds[(vid, frame, int(raw))]):
                prob = torch.sigmoid(logits)  # their postprocessing: sigmoid > 0.5, un-padded, nearest resize
                binary = (prob > 0.5).float()[:h, :w]
                m = F.interpolate(binary[None, None], size=mask.shape, mode="nearest")[0, 0].numpy().astype(np.uint8)
                inside = prob[:h, :w][prob[:h, :w] > 0.5]
                score = float(inside.mean()) if inside.numel() else float(prob[:h, :w].max())
                if scores is not None:
                    score = scores[(vid, frame, int(raw))][c]
                cands.append((m, score))
            best = sorted(range(len(cands)), key=lambda i: cands[i][1])[-1]
            for i, (m, score) in enumerate(cands):
                if top1 and i != best:
                    continue
                detections.append({"image_id": image_id, "segmentation": _rle(m), "score": score})
    return _mttr_metrics(images, detections, root)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    from lvas.data import A2DSentences

    root = tmp_path_factory.mktemp("coco") / "a2d"
    _write_fixture(root)
    ds = A2DSentences(root, "test", frames=2, frame_stride=1, size=S)
    items = [ds[i] for i in range(len(ds))]
    return root, ds, items


def _score_with_lvas(protocol: str, items, extra: int = 0, given: dict | None = None):
    """lvas's Scores over the fixture's items; ``given``: (video, frame, instance) -> a model's score
    per candidate (else the protocol scores each mask)."""
    from lvas.engine.evaluate import Scores

    scores = Scores(protocol, ("segmentation",))
    preds = {}
    for item in items:
        meta, truth = item["meta"], item["gt"][0]
        key = (meta["video"], int(meta["frame"]), int(meta["instance"]))
        resized = tuple(meta["resized"])
        cands = [_logits(truth.numpy(), resized, f"{key}/{c}") for c in range(1 + extra)]
        preds[key] = [(c, resized) for c in cands]
        extra_meta = {}
        if extra:  # a query-based model's further masks, post-processed and scored by the protocol
            from lvas.engine.inference import geometry
            from lvas.coco import coco_score
            from lvas.metrics import masks_for_protocol

            extra_meta["candidates"] = [(masks_for_protocol(c, truth, geometry(meta, S), protocol)[0],
                                         coco_score(c, geometry(meta, S)) if given is None else given[key][1 + i])
                                        for i, c in enumerate(cands[1:])]
        if given is not None:
            extra_meta["model_score"] = given[key][0]
        scores.process(cands[0], truth, {**meta, **extra_meta})
    return scores.compute(), preds


KEYS = ("mAP", "AP50", "AP75", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9", "oIoU", "mIoU", "n")


def test_coco_equals_their_pycocotools_run_on_the_same_predictions(fixture):
    root, _, items = fixture
    ours, preds = _score_with_lvas("coco", items)
    ref = _reference(root, preds, top1=False)
    assert ref["n"] == ours["n"] > 15
    assert 5 < ref["mAP"] < 95  # a non-trivial ranking (not all hits, not all misses)
    for k in KEYS:
        assert ours[k] == pytest.approx(ref[k], abs=1e-9), k


def test_every_candidate_against_the_top_one(fixture):
    """With three masks per query (a query-based model), ``coco`` submits them all and ``coco_top1``
    only the best-scoring: each equals the reference run that way, and they differ."""
    root, _, items = fixture
    all3, preds = _score_with_lvas("coco", items, extra=2)
    top1, _ = _score_with_lvas("coco_top1", items, extra=2)
    ref_all, ref_top = _reference(root, preds, top1=False), _reference(root, preds, top1=True)
    for k in KEYS:
        assert all3[k] == pytest.approx(ref_all[k], abs=1e-9), k
        assert top1[k] == pytest.approx(ref_top[k], abs=1e-9), k
    assert all3["mAP"] != top1["mAP"]
    assert all3["mIoU"] == top1["mIoU"]  # P@k and IoUs use the top mask under both


def test_every_score_tied_ranks_as_mttr_ranks(fixture):
    """All scores equal (an untrained model's flat scores): COCOeval ranks detections by image order,
    which is the sorted string ids MTTR gives its images (not the order lvas scored them), and the
    top mask of a query is the last of its equal scores (their ``sorted(...)[-1]``)."""
    root, _, items = fixture
    keys = {(m["video"], int(m["frame"]), int(m["instance"])) for m in (it["meta"] for it in items)}
    flat = {k: [0.5, 0.5, 0.5] for k in keys}
    for protocol, top1 in (("coco", False), ("coco_top1", True)):
        ours, preds = _score_with_lvas(protocol, list(reversed(items)), extra=2, given=flat)
        ref = _reference(root, preds, top1=top1, scores=flat)
        for k in KEYS:
            assert ours[k] == pytest.approx(ref[k], abs=1e-9), (protocol, k)
    # two of three tied at the top, a lower third: still theirs
    rng = np.random.default_rng(3)
    some = {k: [float(v) for v in rng.choice([0.25, 0.75], size=3)] for k in sorted(keys)}
    ours, preds = _score_with_lvas("coco_top1", items, extra=2, given=some)
    ref = _reference(root, preds, top1=True, scores=some)
    for k in KEYS:
        assert ours[k] == pytest.approx(ref[k], abs=1e-9), k


def test_a_row_whose_instance_is_not_an_integer_is_left_out_as_mttr_leaves_it(fixture):
    """A2D's ``1 (copy)``: MTTR's ground-truth script has no image for it; the released CSTM
    protocol (``paper``) keeps it, read as instance 1 (lvas's A2D reader, with a note)."""
    root, ds, items = fixture
    copies = [it for it in items if it["meta"]["image_id"] is None]
    assert copies and all(it["meta"]["video"] == "vid00" for it in copies)
    coco, preds = _score_with_lvas("coco", items)
    assert coco["n"] == _reference(root, preds, top1=False)["n"] == len(items) - len(copies)
    paper, _ = _score_with_lvas("paper", items)
    assert paper["n"] == len(items)
    assert any("0 (copy)" in n for n in ds.notes)


def test_an_iou_of_exactly_a_threshold_does_not_pass_it(tmp_path):
    """I/U exactly 0.5, 0.7 or 0.9 with I in the hundreds: (I + 1e-6) / (U + 1e-6) rounds to the
    threshold in float32 (MTTR's torch code) and does not pass ">"; in float64 it would."""
    from lvas.coco import CocoEvaluator

    ev = CocoEvaluator("coco")
    images, detections = [], []
    h, w = 40, 50
    for n, (inter, union) in enumerate([(100, 200), (140, 200), (180, 200), (101, 200), (200, 200)]):
        truth = np.zeros((h, w), bool)
        truth.flat[:inter] = True  # the ground truth: I pixels, all predicted
        pred = np.zeros((h, w), bool)
        pred.flat[:union] = True  # the prediction: U pixels
        image_id = f"v_vid_f_{n + 1}_i_0"
        ev.process(torch.from_numpy(pred), torch.from_numpy(truth), {"image_id": image_id, "score": 0.9})
        images.append((image_id, truth))
        detections.append({"image_id": image_id, "segmentation": _rle(pred), "score": 0.9})
    ours, ref = ev.compute(), _mttr_metrics(images, detections, tmp_path)
    for k in KEYS:
        assert ours[k] == pytest.approx(ref[k], abs=1e-9), k
    # exactly at 0.5 / 0.7 / 0.9 fails each: P@0.5 counts 0.7, 0.9, 0.505 and 1.0 but not 0.5
    assert ours["P@0.5"] == 80.0 and ours["P@0.7"] == 40.0 and ours["P@0.9"] == 20.0


def test_a_single_mask_model_scores_the_same_under_coco_and_coco_top1(fixture):
    _, _, items = fixture
    a, _ = _score_with_lvas("coco", items)
    b, _ = _score_with_lvas("coco_top1", items)
    assert a == b


def test_coco_is_in_the_every_protocol_scores_with_map():
    from lvas.registry import PROTOCOLS
    from lvas import catalogue

    assert {"coco", "coco_top1"} <= set(PROTOCOLS.names())
    assert catalogue.get("mAP").aggregate == "ranked"
