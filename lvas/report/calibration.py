"""Does the report's test keep its promise? Error rates on simulated tables where the truth is known.

A simulated table has two rows scored on the same ``samples`` test clips with ``seeds`` trainings
each. Sample i has a difficulty; training seed s of row r shifts every sample's IoU by a seed effect
(sd ``seed_sd``; ``shared`` of it is common to both rows' run of the same seed, as when two-stage rows
share their stage-1 networks); each (row, seed, sample) adds noise (sd ``sample_sd``). Under the null
hypothesis the rows differ only by this noise; with ``effect`` the second row's IoU is raised by it.
The demo's regime: seed effects much larger than sample noise (Temporal AP 45 / 18 / 31 over three
seeds).

:func:`error_rates` reports, over ``tables`` simulated tables, how often each test says "different"
at level α: the report's test over seeds (:func:`lvas.stats.compare`), the secondary test over
samples with networks fixed (:func:`lvas.report.sample_test.compare_samples`) and a two-level bootstrap
(seeds, then samples) for comparison. ``lvas bench significance`` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvas.report.sample_test import compare_samples, per_sample
from lvas.stats import ALPHA, compare

UNION = 1000  # every sample's union, in pixels: IoU = I / UNION


@dataclass(frozen=True)
class Regime:
    seeds: int = 3
    samples: int = 160
    seed_sd: float = 0.10  # IoU shift of a whole training run
    shared: float = 0.5  # share of the seed effect's variance common to both rows' run of one seed
    sample_sd: float = 0.03
    effect: float = 0.0  # true IoU difference (row − other)


def simulate(regime: Regime, rng: np.random.Generator) -> tuple[list[list[dict]], list[list[dict]]]:
    """(row, other): per seed, per-sample records ``{id, I, U}`` as ``test_samples.json`` holds them."""
    r = regime
    difficulty = rng.uniform(0.25, 0.95, r.samples)
    common = rng.normal(0, r.seed_sd * np.sqrt(r.shared), r.seeds)
    rows = []
    for lift in (r.effect, 0.0):
        own = rng.normal(0, r.seed_sd * np.sqrt(1 - r.shared), r.seeds)
        runs = []
        for s in range(r.seeds):
            iou = np.clip(difficulty + lift + common[s] + own[s] + rng.normal(0, r.sample_sd, r.samples), 0, 1)
            runs.append([{"id": f"v/{i}", "I": int(round(v * UNION)), "U": UNION} for i, v in enumerate(iou)])
        rows.append(runs)
    return rows[0], rows[1]


def seed_scores(runs: list[list[dict]], metric: str = "AP", protocol: str = "strict") -> dict[int, float]:
    """Seed index -> that run's metric, as the report reads it from the run's test metrics."""
    return {s: float(per_sample([x["I"] for x in recs], [x["U"] for x in recs], metric, protocol).mean())
            for s, recs in enumerate(runs)}


def two_level_bootstrap_p(row, other, metric: str = "AP", protocol: str = "strict", resamples: int = 999,
                          rng: np.random.Generator | None = None) -> float:
    """Two-sided p of a hierarchical bootstrap: resample paired seeds, then samples within each seed;
    p = twice the share of resampled Δ on the other side of 0 (the percentile method)."""
    rng = rng or np.random.default_rng(0)
    a = np.array([per_sample([x["I"] for x in r], [x["U"] for x in r], metric, protocol) for r in row])
    b = np.array([per_sample([x["I"] for x in r], [x["U"] for x in r], metric, protocol) for r in other])
    d = a - b  # (seeds, samples), paired by seed and sample
    n_seeds, n = d.shape
    seeds = rng.integers(0, n_seeds, (resamples, n_seeds))
    samples = rng.integers(0, n, (resamples, n_seeds, n))
    boot = d[seeds[..., None], samples].mean(axis=(1, 2))
    return float(min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean())))


def error_rates(regime: Regime, tables: int = 500, seed: int = 0, sample_resamples: int = 999,
                tests: tuple[str, ...] = ("seeds", "samples", "bootstrap"), alpha: float = ALPHA) -> dict[str, float]:
    """Share of ``tables`` simulated tables in which each test rejects at ``alpha`` (the false-positive
    rate when ``regime.effect`` is 0, the power otherwise)."""
    rng = np.random.default_rng(seed)
    hits = dict.fromkeys(tests, 0)
    for _ in range(tables):
        row, other = simulate(regime, rng)
        if "seeds" in tests:
            hits["seeds"] += compare(seed_scores(row), seed_scores(other), alpha).significant
        if "samples" in tests:
            hits["samples"] += compare_samples(row, other, "AP", "strict", resamples=sample_resamples).p < alpha
        if "bootstrap" in tests:
            hits["bootstrap"] += two_level_bootstrap_p(row, other, rng=rng) < alpha
    return {k: v / tables for k, v in hits.items()}


def adaptive_false_positives(regime: Regime, min_seeds: int, max_seeds: int, tables: int = 500, seed: int = 0,
                             corrected: bool = True) -> float:
    """False-positive rate of an adaptive seed plan that tests after every seed from ``min_seeds`` to
    ``max_seeds`` and stops at the first separation, at α / looks (``corrected``) or at α."""
    rng = np.random.default_rng(seed)
    looks = max_seeds - min_seeds + 1
    alpha = ALPHA / looks if corrected else ALPHA
    wrong = 0
    for _ in range(tables):
        row, other = simulate(Regime(**{**regime.__dict__, "seeds": max_seeds}), rng)
        a, b = seed_scores(row), seed_scores(other)
        for n in range(min_seeds, max_seeds + 1):
            c = compare({s: a[s] for s in range(n)}, {s: b[s] for s in range(n)}, alpha)
            if c.significant:
                wrong += 1
                break
    return wrong / tables
