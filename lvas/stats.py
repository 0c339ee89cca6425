"""How sure a table is: intervals over seeds, and "B beats A" decided over trainings, not test samples.

* **Interval of a row** — over its seeds' test scores: mean ± t(0.975, n−1)·s/√n (Student t, 95 %).
  With one seed there is no interval (the table says n = 1).

* **Δ of a row against another, its interval and its p-value** (:func:`compare`) — the unit is the
  *training run*. Each seed's run gives one score per row (its test-set metric, which already averages
  the test samples: the second level of the data collapses into it). Where both rows ran the same seeds
  (in a two-stage sweep they then share their stage-1 networks, and in every sweep their initialisation
  and data order), the test is a **paired t-test over seeds**: d_s = row_s − other_s, Δ = mean d_s,
  95 % interval Δ ± t(0.975, n−1)·sd(d)/√n, two-sided p from t = Δ / (sd(d)/√n) on n−1 degrees of
  freedom. Rows that share fewer than two seeds fall back to **Welch's t-test** over their seeds
  (unpaired). Also given: ``P(row > other)``, the share of paired seeds on which the row scored higher
  (Bouthillier et al., MLSys 2021, "probability of outperforming"; ties count one half).

  Why this test: it answers the question an ablation row asks ("does B beat A when both are trained
  again?") with the quantity that varies most between reruns — the training — as its unit, and it is
  exact for normal per-seed differences at any number of seeds, 2 and 3 included. A bootstrap over 3
  seeds has 10 distinct resamples and underestimates the spread (its false-positive rate at 0.05 is
  far above 5 %: ``benchmarks/calibrate_significance.py``); a permutation over 3 paired seeds cannot
  give p below 0.25. The price of honesty is power: with 3 seeds most small differences are "not shown".

* **Sequential looks.** Adaptive seeds (``seeds: {min, max, until: separated}``) look at a row after
  each added seed and stop adding when the test separates it. Looking K = max − min + 1 times at
  level α would reject a true null more often than α; rows of an adaptive plan are therefore tested at
  α / K (Bonferroni over the looks), both when deciding where seeds go and in the report.

* **Secondary, networks fixed** (:func:`lvas.report.sample_test.compare_samples`): the earlier paired permutation test over
  the test samples, each sample's score averaged over the row's seeds. It treats the trained networks
  as fixed and asks only about test-set noise, so it is *not* a verdict on the components (a rerun can
  move it from 0.49 to 0.002); the CSV keeps it as ``p_samples (networks fixed)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np


ALPHA = 0.05
TEST_NAME = ("paired t-test over seeds (each seed's test-set score, rows paired by seed; Welch's t where rows "
             "share fewer than two seeds), two-sided")


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


@dataclass(frozen=True)
class Comparison:
    """Row − other over seeds (see the module docstring).

    ``delta``: mean difference (paired) or difference of means (Welch); ``lo``/``hi``: its 95 %
    interval; ``p``: two-sided p-value; ``seeds``: the number of paired seeds (paired) or the smaller
    of the two rows' seed counts (Welch); ``paired``; ``p_better``: share of paired seeds where the
    row scored higher (NaN unpaired); ``alpha``: the level the verdict uses (α, or α / looks);
    ``p_samples``: the secondary test over samples with networks fixed (None when not computed).
    """

    delta: float
    lo: float
    hi: float
    p: float
    seeds: int
    paired: bool
    p_better: float
    alpha: float = ALPHA
    p_samples: float | None = None
    sd: float = math.nan  # spread of one seed's difference: sd of the paired differences, or sqrt(var + var)

    @property
    def detectable(self) -> float:
        """The smallest |Δ| this test detects with 80 % power at its seeds and spread (see :func:`detectable`)."""
        return detectable(self.sd, self.seeds, self.alpha)

    @property
    def significant(self) -> bool:
        return self.p == self.p and self.p < self.alpha

    def interval_text(self, digits: int = 1) -> str:
        if self.lo != self.lo:
            return "–"
        return f"[{signed(self.lo, digits)}, {signed(self.hi, digits)}]"


def signed(x: float, digits: int = 1) -> str:
    """``+1.2`` / ``-0.4`` / ``+0.0`` (never ``-0.0``)."""
    return f"{round(x, digits) + 0.0:+.{digits}f}"


def _finite(scores: Mapping) -> dict:
    return {s: float(v) for s, v in scores.items() if v is not None and v == v}


def compare(row: Mapping, other: Mapping, alpha: float = ALPHA) -> Comparison | None:
    """Row against other over seeds: paired t where they share ≥ 2 seeds, else Welch's t.

    Args:
        row, other: seed -> that seed's run score (e.g. test AP in percent).
        alpha: the level of the verdict (``significant``); α / looks for an adaptive seed plan.

    Returns:
        None when either row has fewer than two scores (no test over seeds is possible).
    """
    from scipy import stats

    a, b = _finite(row), _finite(other)
    if len(a) < 2 or len(b) < 2:
        return None
    common = sorted(set(a) & set(b), key=str)
    if len(common) >= 2:
        d = np.array([a[s] - b[s] for s in common])
        n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
        better = float(np.mean((d > 0) + 0.5 * (d == 0)))
        if sd == 0.0:  # every seed moved by exactly the same amount (e.g. identical rows)
            return Comparison(mean, mean, mean, 1.0 if mean == 0 else 0.0, n, True, better, alpha, sd=0.0)
        se = sd / math.sqrt(n)
        half = float(stats.t.ppf(0.975, n - 1)) * se
        p = float(2 * stats.t.sf(abs(mean / se), n - 1))
        return Comparison(mean, mean - half, mean + half, p, n, True, better, alpha, sd=sd)
    xa, xb = np.array(list(a.values())), np.array(list(b.values()))
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    mean = float(xa.mean() - xb.mean())
    if va + vb == 0.0:
        return Comparison(mean, mean, mean, 1.0 if mean == 0 else 0.0, min(len(xa), len(xb)), False, math.nan, alpha,
                          sd=0.0)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1))
    half = float(stats.t.ppf(0.975, df)) * se
    p = float(2 * stats.t.sf(abs(mean / se), df))
    return Comparison(mean, mean - half, mean + half, p, min(len(xa), len(xb)), False, math.nan, alpha,
                      sd=math.sqrt(xa.var(ddof=1) + xb.var(ddof=1)))


# --------------------------------------------------------------------------- power: how many seeds?
POWER = 0.8


def power(delta: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Probability that the paired t-test over ``n`` seeds (two-sided, level ``alpha``) separates two
    rows whose per-seed difference is normal with mean ``delta`` and standard deviation ``sd``: the
    noncentral t with n − 1 degrees of freedom and noncentrality delta / (sd / sqrt(n)) beyond ±t_crit.
    (Rows tested with Welch's t are treated as paired with ``sd`` = sqrt(var_a + var_b): the same
    standard error, one less degree of freedom than Welch at equal variances.)"""
    from scipy import stats

    if n < 2 or sd != sd:
        return math.nan
    if sd == 0.0:
        return 1.0 if delta != 0 else alpha
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    nc = abs(delta) / (sd / math.sqrt(n))
    if nc - crit > 40:  # far beyond the critical value: scipy's noncentral t gives NaN out there
        return 1.0
    p = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    return 1.0 if p != p else min(1.0, p)


def detectable(sd: float, n: int, alpha: float = ALPHA, target: float = POWER) -> float:
    """The smallest |Δ| the test over ``n`` seeds detects with probability ``target`` (80 %) when a
    seed's difference varies with ``sd``: what "not shown" can still hide. NaN below two seeds."""
    from scipy.optimize import brentq

    if n < 2 or sd != sd:
        return math.nan
    if sd == 0.0:
        return 0.0
    hi = sd
    while power(hi, sd, n, alpha) < target:
        hi *= 2
    return float(brentq(lambda d: power(d, sd, n, alpha) - target, 0.0, hi, xtol=1e-9 * sd))


def seeds_needed(delta: float, sd: float, alpha: float = ALPHA, target: float = POWER, limit: int = 10_000) -> int:
    """The fewest seeds per row with which the test separates a true difference ``delta`` with
    probability ``target``, at the spread ``sd`` of one seed's difference (``limit`` when more)."""
    if sd != sd or delta == 0:
        return limit
    n = 2
    while n < limit and power(abs(delta), sd, n, alpha) < target:
        n = n + 1 if n < 64 else int(n * 1.1)
    if n > 64:  # the coarse steps overshoot: walk back to the first n that reaches the target
        while n > 64 and power(abs(delta), sd, n - 1, alpha) >= target:
            n -= 1
    return min(n, limit)
