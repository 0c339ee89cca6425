import numpy as np
import pytest
import torch

from lvas.data.clips import Letterbox
from lvas.metrics import MetricAccumulator, masks_for_protocol


def test_hand_computed_metrics():
    acc = MetricAccumulator()
    # IoUs: 1.0, 0.5, 0.75, 0.0 ; intersections/unions chosen by hand
    for inter, union, kind in [(10, 10, "a"), (5, 10, "a"), (30, 40, "m"), (0, 20, "m")]:
        acc.add(inter, union, kind)
    m = acc.compute()
    assert m["P@0.5"] == pytest.approx(75.0)  # 1.0, 0.5, 0.75 (>= 0.5 counts)
    assert m["P@0.6"] == m["P@0.7"] == pytest.approx(50.0)
    assert m["P@0.8"] == m["P@0.9"] == pytest.approx(25.0)
    # AP: thresholds .50 .55 ... .95 -> counts 3,2,2,2,2,2 (0.75 >= .75),1,1,1,1 of 4
    assert m["AP"] == pytest.approx(100 * np.mean([3, 2, 2, 2, 2, 2, 1, 1, 1, 1]) / 4)
    assert m["oIoU"] == pytest.approx(100 * 45 / 80)
    assert m["mIoU"] == pytest.approx(100 * (1 + 0.5 + 0.75 + 0) / 4)
    assert m["a/mIoU"] == pytest.approx(75.0) and m["m/mIoU"] == pytest.approx(37.5)
    assert m["n"] == 4 and m["a/n"] == 2


def test_empty_masks():
    acc = MetricAccumulator()
    acc.add(0, 0)  # empty prediction of an empty ground truth: a perfect sample
    acc.add(0, 25)  # empty prediction, non-empty ground truth
    m = acc.compute()
    assert m["mIoU"] == pytest.approx(50.0) and m["P@0.9"] == pytest.approx(50.0)
    assert m["oIoU"] == pytest.approx(0.0)
    empty = MetricAccumulator().compute()
    assert np.isnan(empty["AP"]) and empty["n"] == 0


def test_paper_protocol_thresholds_at_half_of_its_own_maximum():
    lb = Letterbox.fit((4, 4), 4)
    logits = torch.full((4, 4), -5.0)
    logits[:2, :2] = -1.0  # sigmoid 0.27: below 0.5, but above half the maximum
    gt = torch.zeros(4, 4, dtype=torch.bool)
    gt[:2, :2] = True
    pred, truth = masks_for_protocol(logits, gt, lb, "paper")
    assert torch.equal(pred, gt) and torch.equal(truth, gt)
    pred, _ = masks_for_protocol(logits, gt, lb, "strict")
    assert not pred.any()  # strict: sigmoid > 0.5 only


def test_protocols_map_back_to_the_original_frame():
    lb = Letterbox.fit((6, 12), 8)  # resized to (4, 8), 4 rows of padding
    assert lb.resized == (4, 8)
    logits = torch.full((8, 8), -4.0)
    logits[:2, :4] = 4.0  # top-left quarter of the frame
    logits[4:, :] = 4.0  # confident junk in the padding must be ignored
    gt = torch.zeros(6, 12, dtype=torch.bool)
    gt[:3, :6] = True
    pred, truth = masks_for_protocol(logits, gt, lb, "strict")
    assert pred.shape == truth.shape == (6, 12)
    assert int((pred & truth).sum()) / int((pred | truth).sum()) > 0.75
    assert not pred[4:].any()
    with pytest.raises(ValueError, match="stretched"):  # the released evaluation never letterboxes
        masks_for_protocol(logits, gt, lb, "paper")
    st = Letterbox.fit((6, 12), 8, "stretch")
    logits = torch.full((8, 8), -4.0)
    logits[:4, :4] = 4.0  # the top-left quarter of the stretched frame
    for protocol in ("paper", "strict"):
        pred, truth = masks_for_protocol(logits, gt, st, protocol)
        assert pred.shape == truth.shape == (6, 12)
        # (the released ground truth round trip, > 0 after align_corners bilinear, dilates it a little)
        assert int((pred & truth).sum()) / int((pred | truth).sum()) >= 0.75, protocol
    # the paper protocol's ground truth round trip keeps a thin structure's footprint
    thin = torch.zeros(6, 12, dtype=torch.bool)
    thin[1, :] = True
    _, rt = masks_for_protocol(logits, thin, st, "paper")
    assert rt.any()
    with pytest.raises(ValueError, match="unknown protocol 'cocoa'"):
        masks_for_protocol(logits, gt, lb, "cocoa")
    # coco: sigmoid > 0.5 on the input grid, the padding cut off, nearest to the original frame
    logits = torch.full((8, 8), -4.0)
    logits[:2, :4] = 4.0
    logits[4:, :] = 4.0  # junk in the padding
    pred, truth = masks_for_protocol(logits, gt, lb, "coco")
    assert torch.equal(pred, gt) and torch.equal(truth, gt)


def _released_evaluation(cases):
    """The released CSTM evaluation written out from its description (utils/tool.py, DESIGN §10):
    GT bilinear (align_corners) to S x S and > 0; sigmoid * 255 > 0.5 * max; both back with
    cv2.resize; IoU (I + 1e-6) / (U + 1e-6); P@t with >=; overall IoU sum I / sum U."""
    import cv2
    import torch.nn.functional as F

    ious, inters, unions = [], [], []
    for logits, gt in cases:
        h, w = gt.shape
        large = F.interpolate(gt[None, None].float(), size=logits.shape, mode="bilinear", align_corners=True)[0, 0]
        large[large > 0] = 1
        res = torch.sigmoid(logits).numpy() * 255.0
        pred = cv2.resize((res > np.amax(res) * 0.5).astype(np.uint8), (w, h))
        g = cv2.resize(large.numpy().astype(np.uint8), (w, h))
        i = (pred & (g == 1)).astype(float).sum()
        u = (pred | (g == 1)).astype(float).sum()
        ious.append((i + 1e-6) / (u + 1e-6))
        inters.append(i)
        unions.append(u)
    ious = np.array(ious)
    out = {f"P@{t}": 100 * (ious >= t).mean() for t in (0.5, 0.6, 0.7, 0.8, 0.9)}
    out["AP"] = 100 * np.mean([(ious >= k / 100.0).mean() for k in range(50, 96, 5)])
    out["oIoU"] = 100 * np.sum(inters) / np.sum(unions)
    out["mIoU"] = 100 * ious.mean()
    return out


def test_paper_protocol_is_the_released_evaluation():
    """Same logits, A2D-like frame sizes: every metric identical to the released computation."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    cases = []
    for k in range(120):
        h, w = [(320, 568), (320, 427), (240, 320), (320, 320)][k % 4]
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cy, cx = torch.rand(2, generator=g) * torch.tensor([h, w])
        ry, rx = (torch.rand(2, generator=g) * 0.3 + 0.05) * torch.tensor([h, w])
        gt = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        if k % 17 == 0:
            gt[:] = False
        g_in = F.interpolate(gt[None, None].float(), size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
        noise = F.interpolate(torch.randn(1, 1, 8, 8, generator=g), size=(64, 64), mode="bicubic")[0, 0]
        cases.append((8 * (g_in - 0.5) + noise * float(torch.rand(1, generator=g)) * 12, gt))
    acc = MetricAccumulator.for_protocol("paper")
    for logits, gt in cases:
        pred, truth = masks_for_protocol(logits, gt, Letterbox.fit(tuple(gt.shape), 64, "stretch"), "paper")
        acc.add(int((pred & truth).sum()), int((pred | truth).sum()))
    ours, theirs = acc.compute(), _released_evaluation(cases)
    assert 0 < theirs["P@0.9"] < theirs["P@0.5"] < 100  # a spread of IoUs, not a degenerate case
    for k, v in theirs.items():
        assert ours[k] == pytest.approx(v, abs=1e-9), k


def test_lbdt_protocol_fixed_threshold_and_nearest_round_trips():
    """LBDT: sigmoid > 0.5 (not CSTM's 0.5 x maximum), ground truth via S x S (bilinear, > 0), both
    nearest-upsampled; on weak logits the two released protocols disagree."""
    import torch.nn.functional as F

    logits = torch.full((8, 8), -3.0)
    logits[2:6, 2:6] = -1.0  # below 0.5 after the sigmoid, but at the per-sample maximum
    gt = torch.zeros(20, 30, dtype=torch.bool)
    gt[5:15, 7:23] = True
    lb = Letterbox.fit((20, 30), 8, "stretch")
    pred_l, truth_l = masks_for_protocol(logits, gt, lb, "lbdt")
    pred_p, _ = masks_for_protocol(logits, gt, lb, "paper")
    assert not pred_l.any() and pred_p.sum() > 0
    g = (F.interpolate(gt[None, None].float(), size=(8, 8), mode="bilinear", align_corners=True) > 0).float()
    assert torch.equal(truth_l, F.interpolate(g, size=(20, 30), mode="nearest")[0, 0] > 0.5)
    strong = logits + 4.0
    pred_s, _ = masks_for_protocol(strong, gt, lb, "lbdt")
    expect = F.interpolate((torch.sigmoid(strong) > 0.5).float()[None, None], size=(20, 30))[0, 0] > 0.5
    assert torch.equal(pred_s, expect) and pred_s.sum() > 0
    with pytest.raises(ValueError, match="letterboxed"):
        masks_for_protocol(logits, gt, Letterbox.fit((20, 30), 8, "letterbox"), "lbdt")
