"""The DAVIS-2017 evaluation's procedures (davis2017-evaluation: ``metrics.py``, ``davis.py``,
``results.py``, ``evaluation.py``), written from its code for the tests and independent of lvas:
region J (``db_eval_iou``), boundary F (``f_measure`` with ``seg2bmap``), and the unsupervised task as
ReferFormer's ``eval_davis.py`` runs it on one annotator's folder of label PNGs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """DAVIS's seg2bmap at the mask's own size: a pixel differing from its east, south or south-east
    neighbour (zero outside), the last row east only, the last column south only, no corner."""
    seg = seg.astype(bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def f_measure(fg: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008) -> float:
    import cv2

    void = np.zeros(fg.shape, bool) if void is None else void.astype(bool)
    r = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(fg.shape))
    yy, xx = np.mgrid[-int(r):int(r) + 1, -int(r):int(r) + 1]
    disk = (yy ** 2 + xx ** 2 <= r ** 2).astype(np.uint8)  # skimage.morphology.disk
    fb, gb = seg2bmap(fg * np.logical_not(void)), seg2bmap(gt * np.logical_not(void))
    fg_dil = cv2.dilate(fb.astype(np.uint8), disk)
    gt_dil = cv2.dilate(gb.astype(np.uint8), disk)
    gt_match, fg_match = gb * fg_dil, fb * gt_dil
    n_fg, n_gt = np.sum(fb), np.sum(gb)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision, recall = np.sum(fg_match) / float(n_fg), np.sum(gt_match) / float(n_gt)
    return 0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def db_eval_iou(annotation: np.ndarray, segmentation: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    annotation, segmentation = annotation.astype(bool), segmentation.astype(bool)
    keep = np.ones_like(annotation) if void is None else np.logical_not(void.astype(bool))
    inters = np.sum((segmentation & annotation) & keep, axis=(-2, -1))
    union = np.sum((segmentation | annotation) & keep, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inters / union
    j[np.isclose(union, 0)] = 1
    return j


def _read(folder: Path, names: list[str]) -> np.ndarray:
    return np.stack([np.array(Image.open(folder / f"{n}.png")) for n in names]).astype(float)


def evaluate_unsupervised(annotations: Path, sequences: list[str], results: Path) -> dict:
    """DAVISEvaluation(task='unsupervised').evaluate(results) then eval_davis.py's global means, for the
    ``sequences`` (val.txt) whose ground truth is ``annotations/<sequence>/*.png``: {"J", "F", "JF"}
    (percent) and "per_object" J and F means in the toolkit's order."""
    from scipy.optimize import linear_sum_assignment

    jm, fm = [], []
    for seq in sequences:
        names = [p.stem for p in sorted((annotations / seq).glob("*.png"))]
        masks = _read(annotations / seq, names)
        void = masks == 255
        masks[void] = 0
        n_obj = int(np.max(masks[0]))
        gt = (np.arange(1, n_obj + 1)[:, None, None, None] * np.ones((n_obj, *masks.shape)) == masks[None]) > 0
        res_l = _read(results / seq, names)
        n_res = int(np.max(res_l))
        assert n_res <= 20
        res = (np.arange(1, n_res + 1)[:, None, None, None] * np.ones((n_res, *res_l.shape)) == res_l[None]) > 0
        if res.shape[0] < gt.shape[0]:
            res = np.concatenate([res, np.zeros((gt.shape[0] - res.shape[0], *res.shape[1:]), bool)], axis=0)
        j = np.zeros((res.shape[0], gt.shape[0], gt.shape[1]))
        f = np.zeros_like(j)
        for ii in range(gt.shape[0]):
            for jj in range(res.shape[0]):
                j[jj, ii] = db_eval_iou(gt[ii], res[jj], void)
                f[jj, ii] = [f_measure(res[jj][t], gt[ii][t], void[t]) for t in range(gt.shape[1])]
        rows, cols = linear_sum_assignment(-(np.mean(j, axis=2) + np.mean(f, axis=2)) / 2)
        for ii in range(gt.shape[0]):
            jm.append(np.nanmean(j[rows, cols][ii]))
            fm.append(np.nanmean(f[rows, cols][ii]))
    return {"J": 100 * np.mean(jm), "F": 100 * np.mean(fm), "JF": 100 * (np.mean(jm) + np.mean(fm)) / 2,
            "per_object": list(zip(jm, fm))}


def referformer_merge(probs: np.ndarray) -> np.ndarray:
    """inference_davis.py's label map of one annotator: probs (objects, T, H, W) -> (T, H, W) uint8."""
    import torch

    p = torch.from_numpy(probs.astype(np.float32)).clone()
    p[p < 0.5] = 0.0
    background = 0.1 * torch.ones(1, *p.shape[1:])
    return torch.argmax(torch.cat([background, p], dim=0), dim=0).numpy().astype(np.uint8)
