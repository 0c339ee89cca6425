"""How sure a table is: confidence intervals over seeds and paired tests between two rows.

* **Interval of a row** — over its seeds' test scores: mean ± t(0.975, n−1)·s/√n (Student t, 95 %).
  With one seed there is no interval (the table says n = 1).
* **Δ vs the baseline row and its p-value** — a paired permutation test over the test samples
  (``scipy.stats.permutation_test``, ``permutation_type='samples'``, 9,999 resamples, two-sided,
  fixed generator). Each test sample's score is averaged over the row's seeds (for AP a sample
  scores the fraction of the thresholds 0.50:0.05:0.95 its IoU reaches, so the mean over samples
  *is* the AP; for P@x a 0/1 hit; for mIoU its IoU; oIoU sums intersections and unions over seeds
  and compares ratios of sums), then the test swaps the two rows' scores sample by sample. It asks
  whether the difference holds beyond the test set's sampling noise given these seeds; the spread
  over seeds is in each row's ± interval, and with few seeds that interval is the wider one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lvas.metrics import AP_THRESHOLDS, get_protocol, sample_iou

ALPHA = 0.05
TEST_NAME = ("paired permutation test over test samples (scipy.stats.permutation_test, permutation_type='samples', "
             "9,999 resamples, two-sided), each sample's score averaged over the row's seeds")


@dataclass(frozen=True)
class Interval:
    mean: float
    std: float
    n: int
    half: float  # half-width of the 95 % CI; NaN for n < 2

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half

    def text(self, digits: int = 1) -> str:
        if self.n == 0 or self.mean != self.mean:
            return "–"
        if self.n == 1 or self.half != self.half:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half:.{digits}f}"


def interval(values, level: float = 0.95) -> Interval:
    """Mean, std and Student-t confidence half-width of ``values`` (NaNs dropped)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and v == v], dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, 0, math.nan)
    if n == 1:
        return Interval(float(x[0]), math.nan, 1, math.nan)
    sd = float(x.std(ddof=1))
    return Interval(float(x.mean()), sd, n, float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)))


def per_sample(inter: np.ndarray, union: np.ndarray, metric: str, protocol: str) -> np.ndarray:
    """Each sample's share of ``metric`` (percent): their mean over samples is the metric itself,
    as :class:`lvas.metrics.MetricAccumulator` computes it (AP, P@x, mIoU; not oIoU)."""
    inter, union = np.asarray(inter, dtype=np.float64), np.asarray(union, dtype=np.float64)
    iou, tol = sample_iou(inter, union, get_protocol(protocol).smooth)
    if metric == "AP":
        return 100.0 * np.mean([(iou >= t - tol) for t in AP_THRESHOLDS], axis=0)
    if metric.startswith("P@"):
        return 100.0 * (iou >= float(metric[2:]) - tol).astype(np.float64)
    if metric == "mIoU":
        return 100.0 * iou
    raise ValueError(f"{metric} is not a mean over samples")


def _aligned(runs: list[list[dict]], ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, samples) intersections and unions, columns in ``ids`` order."""
    inter = np.zeros((len(runs), len(ids)))
    union = np.zeros((len(runs), len(ids)))
    for s, records in enumerate(runs):
        by_id = {r["id"]: r for r in records}
        for j, i in enumerate(ids):
            inter[s, j], union[s, j] = by_id[i]["I"], by_id[i]["U"]
    return inter, union


@dataclass(frozen=True)
class Comparison:
    delta: float  # row − baseline, in the metric's units (seed means)
    p: float
    samples: int

    @property
    def significant(self) -> bool:
        return self.p < ALPHA


def compare(row: list[list[dict]], base: list[list[dict]], metric: str, protocol: str,
            resamples: int = 9999) -> Comparison | None:
    """Paired permutation test of ``row`` against ``base`` on ``metric`` (see the module docstring).

    Args:
        row, base: per seed, the run's per-sample records ``{id, I, U}`` (``test_samples.json``).

    Returns:
        None when the two rows were not scored on the same test samples.
    """
    from scipy.stats import permutation_test

    if not row or not base:
        return None
    ids = sorted({r["id"] for r in row[0]})
    for runs in (row, base):
        for records in runs:
            if sorted(r["id"] for r in records) != ids:
                return None
    ia, ua = _aligned(row, ids)
    ib, ub = _aligned(base, ids)
    rng = np.random.default_rng(0)
    if metric == "oIoU":
        inter = np.concatenate([ia.sum(0), ib.sum(0)])
        union = np.concatenate([ua.sum(0), ub.sum(0)])
        n = len(ids)

        def stat(x, y, axis=-1):
            return 100.0 * (inter[x].sum(axis) / union[x].sum(axis) - inter[y].sum(axis) / union[y].sum(axis))

        data = (np.arange(n), np.arange(n) + n)
    else:
        a = np.mean([per_sample(i, u, metric, protocol) for i, u in zip(ia, ua)], axis=0)
        b = np.mean([per_sample(i, u, metric, protocol) for i, u in zip(ib, ub)], axis=0)

        def stat(x, y, axis=-1):
            return np.mean(x, axis=axis) - np.mean(y, axis=axis)

        data = (a, b)
    res = permutation_test(data, stat, permutation_type="samples", vectorized=True, n_resamples=resamples,
                           alternative="two-sided", rng=rng, axis=-1)
    delta = float(stat(*data))
    return Comparison(delta, float(res.pvalue), len(ids))
