"""The report's secondary test, networks held fixed: a paired permutation test over the test samples.

Each test sample's score is averaged over the row's seeds, then the two rows' scores are swapped
sample by sample (``scipy.stats.permutation_test``, ``permutation_type='samples'``, two-sided). It
asks only whether these particular trained networks differ on these clips — test-set noise, not a
verdict on the components (that is :func:`lvas.stats.compare`, over seeds). The CSV keeps it as
``p_samples (networks fixed)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvas.metrics import AP_THRESHOLDS, get_protocol, sample_iou

SAMPLE_TEST_NAME = ("paired permutation test over test samples with each sample's score averaged over the row's "
                    "seeds (networks held fixed: test-set noise only, not a verdict on the components)")


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
class SampleComparison:
    delta: float  # row − other, in the metric's units (seed means)
    p: float
    samples: int


def compare_samples(row: list[list[dict]], other: list[list[dict]], metric: str, protocol: str,
                    resamples: int = 9999) -> SampleComparison | None:
    """The secondary test (networks fixed): paired permutation over the test samples.

    Args:
        row, other: per seed, the run's per-sample records ``{id, I, U}`` (``test_samples.json``).

    Returns:
        None when the two rows were not scored on the same test samples.
    """
    from scipy.stats import permutation_test

    if not row or not other:
        return None
    ids = sorted({r["id"] for r in row[0]})
    for runs in (row, other):
        for records in runs:
            if sorted(r["id"] for r in records) != ids:
                return None
    ia, ua = _aligned(row, ids)
    ib, ub = _aligned(other, ids)
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
    return SampleComparison(float(stat(*data)), float(res.pvalue), len(ids))
