"""Every shipped experiment YAML at its real input size: one optimiser step and the test split's
evaluation on synthetic frames of that size (``lvas bench train``), each in its own process so its
peak memory is its own. Prints one Markdown table (seconds per phase, peak RSS).

    python benchmarks/paper_scale.py [--batch 2] [--device cpu] [experiments/*.yaml ...]

A YAML that does not fit (MemoryError, or the process killed) is reported as such with the batch
tried; rerun it with --batch 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["cstm_paper", "cstm_released", "lbdt4_paper", "lbdt4_ytvos", "acga_paper"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("yamls", nargs="*", help="default: the shipped paper-size experiments and experiments/table3/*")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    yamls = [Path(p) for p in args.yamls] or [ROOT / "experiments" / f"{n}.yaml" for n in SHIPPED] + \
        sorted((ROOT / "experiments" / "table3").glob("*.yaml"))
    print("| experiment | clip (B x T x H x W) | build + 1 step (s) | evaluate test (s) | loss | peak RSS (GiB) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for y in yamls:
        name = y.relative_to(ROOT / "experiments").with_suffix("") if y.is_relative_to(ROOT / "experiments") else y
        for batch in sorted({args.batch, 1}, reverse=True):
            p = subprocess.run([str(Path(sys.executable).with_name("lvas")), "bench", "train", str(y), "--batch", str(batch),
                                "--device", args.device], capture_output=True, text=True)
            if p.returncode == 0:
                r = json.loads(p.stdout[p.stdout.index("{"):])
                print(f"| {name} | {r['clip']} | {r['build_and_one_step_s']} | {r['evaluate_test_s']} | {r['loss']} | "
                      f"{r['peak_rss_gib']} |", flush=True)
                break
            print(f"| {name} | batch {batch} failed (rc {p.returncode}) | {p.stderr.strip().splitlines()[-1:]} | | | |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
