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
    for protocol in ("paper", "strict"):
        pred, truth = masks_for_protocol(logits, gt, lb, protocol)
        assert pred.shape == truth.shape == (6, 12)
        inter, union = int((pred & truth).sum()), int((pred | truth).sum())
        assert inter / union > 0.75, protocol
        assert not pred[4:].any()
    # the paper protocol's ground truth round trip keeps a thin structure's footprint
    thin = torch.zeros(6, 12, dtype=torch.bool)
    thin[1, :] = True
    _, rt = masks_for_protocol(logits, thin, lb, "paper")
    assert rt.any()
    with pytest.raises(ValueError, match="unknown protocol 'coco'"):
        masks_for_protocol(logits, gt, lb, "coco")
