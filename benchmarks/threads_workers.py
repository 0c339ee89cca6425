"""Seconds per training epoch of one quickstart network under torch threads x DataLoader workers,
alone or two side by side: the measurement behind ``train.threads`` / ``data.workers: auto``
(lvas/engine/resources.py). Prints one JSON line per run.

    python benchmarks/threads_workers.py --label Spatial --threads 2 --workers 2
    python benchmarks/threads_workers.py --label Spatial --threads 1 --workers 0 --pair Temporal

``--pair LABEL`` starts a second process training LABEL's network at the same time (same threads
and workers) and reports both: what ``lvas sweep --workers 2`` does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(label: str, threads: int, workers: int, epochs: int, sweep: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from lvas.engine import trainer as T
    from lvas.sweepspec import load_sweep

    spec = load_sweep(sweep)
    trial = next(t for t in spec.grid() if t.label == label)
    cfg = spec.config_for(trial)
    cfg.train.threads, cfg.data.workers, cfg.train.epochs = threads, workers, epochs
    train, val, test, vocab, _ = T.make_datasets(cfg)
    branch = cfg.model.mode if cfg.model.mode != "both" else "spatial"
    c1 = T.stage1_config(cfg, branch)
    model = T._build(c1, vocab)
    t0 = time.perf_counter()
    T.fit(c1, model, Path(tempfile.mkdtemp()), train, val, vocab, epochs=epochs, lr=1e-3, progress=False)
    t1 = time.perf_counter()
    return {"label": label, "network": f"stage-1 {branch}" + (" +CMAM" if cfg.model.cmam.stages else ""),
            "threads": torch.get_num_threads(), "workers": workers, "epochs": epochs,
            "s_per_epoch": round((t1 - t0) / epochs, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--label", default="Spatial")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--pair", default=None, help="a second label trained at the same time in another process")
    ap.add_argument("--sweep", default=str(ROOT / "sweeps" / "quickstart.yaml"))
    args = ap.parse_args()
    if args.pair:
        cmd = [sys.executable, __file__, "--threads", str(args.threads), "--workers", str(args.workers),
               "--epochs", str(args.epochs), "--sweep", args.sweep]
        procs = [subprocess.Popen(cmd + ["--label", lab], stdout=subprocess.PIPE, text=True)
                 for lab in (args.label, args.pair)]
        for p in procs:
            out = json.loads(p.communicate()[0].strip().splitlines()[-1])
            print(json.dumps({**out, "side_by_side": True}))
        return
    print(json.dumps(one(args.label, args.threads, args.workers, args.epochs, args.sweep)))


if __name__ == "__main__":
    main()
