"""Development oracle: lvas's region J and boundary F against the DAVIS 2017 evaluation's own
``db_eval_iou`` and ``f_measure`` on the same masks.

Not a test (the project's tests never depend on released code). Given a checkout of
davisvideochallenge/davis2017-evaluation (needs opencv and scikit-image, which lvas does not), scores
random blob masks of several sizes -- shifted, eroded, empty, touching the border -- with both and
prints the largest difference.

    python benchmarks/oracle_davis_jf.py --davis /path/to/davis2017-evaluation [--pairs 400]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from lvas.metrics import boundary_f, region_j


def blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A union of 1-3 random ellipses and rectangles, sometimes empty or cut by the frame's edge."""
    m = np.zeros((h, w), bool)
    if rng.random() < 0.08:
        return m
    yy, xx = np.mgrid[:h, :w]
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(-0.1, 1.1) * h, rng.uniform(-0.1, 1.1) * w
        ry, rx = rng.uniform(0.02, 0.4) * h, rng.uniform(0.02, 0.4) * w
        if rng.random() < 0.5:
            m |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            m |= (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--davis", required=True, help="checkout of davis2017-evaluation")
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sys.path.insert(0, args.davis)
    from davis2017.metrics import db_eval_iou, f_measure  # noqa: E402

    rng = np.random.default_rng(args.seed)
    dj = df = 0.0
    sizes = [(24, 32), (64, 64), (97, 131), (180, 320), (360, 640), (720, 1280)]
    for i in range(args.pairs):
        h, w = sizes[i % len(sizes)]
        gt = blob(rng, h, w)
        r = rng.random()
        if r < 0.3:  # a shifted copy: boundaries within / beyond the tolerance
            pred = np.roll(gt, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
        elif r < 0.4:
            pred = np.zeros_like(gt)
        else:
            pred = blob(rng, h, w)
        dj = max(dj, abs(region_j(pred, gt) - float(db_eval_iou(gt, pred))))
        df = max(df, abs(boundary_f(pred, gt) - float(f_measure(pred, gt))))
    print(f"{args.pairs} mask pairs, sizes {sizes}: max |J lvas - J davis| = {dj:.3g}, "
          f"max |F lvas - F davis| = {df:.3g}")
    return 0 if dj < 1e-12 and df < 1e-12 else 1


if __name__ == "__main__":
    raise SystemExit(main())
