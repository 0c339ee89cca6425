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


def _reference(root: Path, preds: dict[tuple[str, int, int], list[tuple[torch.Tensor, tuple[int, int]]]],
               top1: bool) -> dict[str, float]:
    """MTTR's procedure on ``preds``: (video, frame, instance) -> [(logits (S, S), resized (h, w))]."""
    ta = root / "text_annotations"
    import csv

    queries = list(csv.DictReader((ta / "a2d_annotation.txt").open()))
    images, annotations, detections, image_ids = [], [], [], {}
    for q in queries:
        vid, inst = q["video_id"], int(q["instance_id"])
        for p in sorted((ta / "a2d_annotation_with_instances" / vid).glob("*.h5")):
            with h5py.File(p) as f:
                instances = [int(x) for x in np.asarray(f["instance"]).ravel()]
                if inst not in instances:
                    continue  # not in this frame: no image (as their script)
                k = instances.index(inst)
                mask = (np.asarray(f["reMask"])[k] if len(instances) > 1 else np.asarray(f["reMask"])).T
            frame = int(p.stem)
            image_id = f"v_{vid}_f_{frame}_i_{inst}"
            assert image_id not in image_ids
            image_ids[image_id] = mask
            images.append({"id": image_id, "height": mask.shape[0], "width": mask.shape[1]})
            r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            r["counts"] = r["counts"].decode("ascii")
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "segmentation": r,
                                "area": float(mask_utils.area(r)), "bbox": [0, 0, 1, 1], "iscrowd": 0})
            cands = []
            for logits, (h, w) in preds[(vid, frame, inst)]:
                prob = torch.sigmoid(logits)
                binary = (prob > 0.5).float()[:h, :w]  # un-padded
                m = F.interpolate(binary[None, None], size=mask.shape, mode="nearest")[0, 0].numpy().astype(np.uint8)
                inside = prob[:h, :w][prob[:h, :w] > 0.5]
                score = float(inside.mean()) if inside.numel() else float(prob[:h, :w].max())
                cands.append((m, score))
            best = max(range(len(cands)), key=lambda i: cands[i][1])
            for i, (m, score) in enumerate(cands):
                if top1 and i != best:
                    continue
                r = mask_utils.encode(np.asfortranarray(m))
                r["counts"] = r["counts"].decode("ascii")
                detections.append({"image_id": image_id, "category_id": 1, "segmentation": r, "score": score})
    gt_json = root / "a2d_test_annotations_in_coco_format.json"
    gt_json.write_text(json.dumps({"categories": [{"id": 1, "name": "dummy_class"}], "images": images,
                                   "annotations": annotations}))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_json))
        coco_pred = coco_gt.loadRes(detections)
        ev = COCOeval(coco_gt, coco_pred, iouType="segm")
        ev.params.useCats = 0
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {"mAP": 100 * ev.stats[0], "AP50": 100 * ev.stats[1], "AP75": 100 * ev.stats[2]}
    hits = {t: 0 for t in (0.5, 0.6, 0.7, 0.8, 0.9)}
    inter_sum = union_sum = 0.0
    ious = []
    for image_id in coco_gt.imgs:
        gt_mask = mask_utils.decode(coco_gt.imgToAnns[image_id][0]["segmentation"])
        top = sorted(coco_pred.imgToAnns[image_id], key=lambda a: a["score"])[-1]
        pm = mask_utils.decode(top["segmentation"])
        inter, union = float((pm & gt_mask).sum()), float((pm | gt_mask).sum())
        iou = (inter + 1e-6) / (union + 1e-6)
        for t in hits:
            hits[t] += iou > t
        inter_sum, union_sum = inter_sum + inter, union_sum + union
        ious.append(iou)
    out.update({f"P@{t}": 100 * c / len(ious) for t, c in hits.items()})
    out["oIoU"], out["mIoU"], out["n"] = 100 * inter_sum / union_sum, 100 * float(np.mean(ious)), len(ious)
    return out


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    from lvas.data import A2DSentences

    root = tmp_path_factory.mktemp("coco") / "a2d"
    _write_fixture(root)
    ds = A2DSentences(root, "test", frames=2, frame_stride=1, size=S)
    items = [ds[i] for i in range(len(ds))]
    return root, ds, items


def _score_with_lvas(protocol: str, items, extra: int = 0):
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
                                         coco_score(c, geometry(meta, S))) for c in cands[1:]]
        scores.process(cands[0], truth, {**meta, **extra_meta})
    return scores.compute(), preds


KEYS = ("mAP", "AP50", "AP75", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9", "oIoU", "mIoU", "n")


def test_coco_equals_their_pycocotools_run_on_the_same_predictions(fixture):
    root, _, items = fixture
    ours, preds = _score_with_lvas("coco", items)
    ref = _reference(root, preds, top1=False)
    assert ref["n"] == len(items) > 15
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
