"""Error rates of the report's test on simulated tables where the truth is known (lvas.report.calibration).

    python benchmarks/calibrate_significance.py [--tables 2000]

Prints, for two rows that differ only by seed noise (false positives) and for rows with a real
difference (power), how often each test says "different" at 0.05: the report's paired t over seeds,
the earlier paired permutation over test samples (networks fixed) and a two-level bootstrap over
seeds then samples; and the false-positive rate of adaptive seeds (2 to 6) with and without the
α / looks correction.
"""

from __future__ import annotations

import argparse
import time

from lvas.report.calibration import Regime, adaptive_false_positives, error_rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", type=int, default=2000, help="simulated tables per setting")
    ap.add_argument("--resamples", type=int, default=999, help="permutations of the test over samples")
    args = ap.parse_args()
    t0 = time.time()
    print(f"{'setting':<44} {'seeds (t)':>10} {'samples':>10} {'bootstrap':>10}")
    for name, regime in (("no difference, 3 seeds", Regime(seeds=3)),
                         ("no difference, 5 seeds", Regime(seeds=5)),
                         ("no difference, 3 seeds, seed sd = sample sd", Regime(seeds=3, seed_sd=0.03)),
                         ("IoU +0.15, 3 seeds", Regime(seeds=3, effect=0.15)),
                         ("IoU +0.15, 6 seeds", Regime(seeds=6, effect=0.15)),
                         ("IoU +0.15, 10 seeds", Regime(seeds=10, effect=0.15))):
        r = error_rates(regime, tables=args.tables, sample_resamples=args.resamples)
        print(f"{name:<44} {r['seeds']:>10.3f} {r['samples']:>10.3f} {r['bootstrap']:>10.3f}", flush=True)
    for corrected in (True, False):
        fp = adaptive_false_positives(Regime(), 2, 6, tables=args.tables, corrected=corrected)
        print(f"adaptive seeds 2..6, {'alpha / 5 looks' if corrected else 'alpha at every look':<22} "
              f"false positives {fp:.3f}")
    print(f"({args.tables} tables per setting, regime {Regime()}; {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
