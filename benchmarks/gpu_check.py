"""The first hour on a GPU: one command that says how lvas runs on it.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--steps 20] [--batch 2]
    python benchmarks/gpu_check.py --tiny        # the CPU version the tests run (so it cannot rot)

For each paper YAML (cstm_paper, cstm_released, lbdt4_paper, acga_paper; ``--tiny``: cpu_small at
4 x 64^2): ``--steps`` training steps (after 3 warm-up steps) in bf16 autocast + channels_last and in
fp32, on synthetic clips at the experiment's size, with its own loss and Adam: clips/s, peak device
memory, achieved TFLOP/s and model FLOPs utilisation (MFU) from lvas's own FLOP count (a training
step = 3 x the forward's 2 x MACs per clip) against the device's peak (a table of known devices;
``--peak-tflops`` for others). Then: the data loader's clips/s with the real JPEG pipeline on
synthetic 320 x 560 frames (A2D's frame size) for 0 and N workers; DDP over every visible GPU (gloo
on 2 CPU processes with ``--tiny``) against one process at the same per-device batch; and a
determinism check (the same steps twice from the same seed: the largest loss difference).

Writes one JSON (``--out``) and prints a short Markdown table. Measures, never asserts: the numbers
go into notes and the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PAPER = ["cstm_paper", "cstm_released", "lbdt4_paper", "acga_paper"]
# dense peak TFLOP/s (bf16, fp32 without TF32) of devices we may meet; MFU is left out for others
PEAK = {"H200": (989.0, 67.0), "H100": (989.0, 67.0), "A100": (312.0, 19.5), "L40S": (362.0, 91.6),
        "A6000": (155.0, 38.7), "V100": (125.0, 15.7), "RTX 4090": (165.0, 82.6)}


def _peak(device: torch.device, override: float | None) -> tuple[float | None, float | None, str]:
    if override:
        return override, override, "given"
    if device.type != "cuda":
        return None, None, platform.processor() or platform.machine()
    name = torch.cuda.get_device_name(device)
    for key, (bf16, fp32) in PEAK.items():
        if key in name:
            return bf16, fp32, name
    return None, None, name


def _config(name: str, tiny: bool):
    from lvas.config import load_config

    over = ["model.spatial.pretrained=none", "model.temporal.pretrained=none"] if not tiny else \
        ["data.frames=4", "data.size=64"]
    cfg = load_config(ROOT / "experiments" / f"{name}.yaml", [])
    from lvas.models.model import model_plan

    plan = model_plan(cfg)
    over = [o for o in over if o.rsplit(".", 2)[0] in plan or tiny]
    if cfg.model.text.embedding != "learned":
        over.append("model.text.embedding=learned")  # no GloVe file needed: the cost is the same
    return load_config(ROOT / "experiments" / f"{name}.yaml", over)


def _batch(cfg, b: int, device: torch.device) -> dict:
    f, s, w = cfg.data.frames, cfg.data.size, cfg.model.text.max_words
    g = torch.Generator().manual_seed(0)
    return {"clip": torch.rand(b, 3, f, s, s, generator=g), "tokens": torch.randint(1, 50, (b, w), generator=g),
            "mask": torch.ones(b, w, dtype=torch.bool), "target": [(torch.rand(1, s, s, generator=g) > 0.7).float()
                                                                   for _ in range(b)], "target_frames": [[f // 2]] * b}


def train_steps(cfg, device: torch.device, batch: int, steps: int, bf16: bool, seed: int = 0) -> dict:
    """``steps`` timed optimiser steps after 3 warm-up steps; returns clips/s, peak memory, losses."""
    from lvas.engine.inference import forward, training_pairs
    from lvas.models.losses.segmentation import build_loss
    from lvas.engine.setup import cpu_bf16_guard
    from lvas.models import build_model
    from lvas.models.base import to_channels_last

    torch.manual_seed(seed)
    model = build_model(cfg, vocab=[f"w{i}" for i in range(60)], load_weights=False).to(device).train()
    if bf16 and device.type == "cuda":
        to_channels_last(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = build_loss(cfg)
    data = _batch(cfg, batch, device)
    losses = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> float:
        with cpu_bf16_guard(device, bf16):
            out, target = training_pairs(forward(model, data, device, bf16), data, device)
            loss = loss_fn(out, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        return float(loss.detach())

    for _ in range(3):
        losses.append(step())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(steps):
        losses.append(step())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else _rss_gib()
    return {"clips_per_s": batch * steps / dt, "step_s": dt / steps, "peak_mem_gib": peak, "losses": losses}


def _rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _macs(cfg) -> int:
    from lvas.flops import measure_config

    return measure_config(cfg).macs


def data_rate(workers: int, tiny: bool) -> list[dict]:
    """Clips/s of the A2D reader on synthetic JPEG frames of 320 x 560 (letterboxed to the config's size)."""
    import numpy as np
    from PIL import Image

    from lvas.bench import bench_data
    from lvas.config import load_config
    import h5py

    from lvas.data.synthetic import generate, write_instance_h5

    out = []
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "synth"
        generate(root, videos=4 if tiny else 12, frames=8, size=64, progress=False)
        for jpg in (root / "Release" / "frames").rglob("*.jpg"):  # A2D's frame size, real JPEGs
            Image.open(jpg).convert("RGB").resize((560, 320)).save(jpg, quality=90)
        for h5 in (root / "text_annotations").rglob("*.h5"):  # the masks at the same size
            with h5py.File(h5) as f:
                ids = [int(x) for x in np.asarray(f["instance"]).ravel()]
                rem = np.asarray(f["reMask"])
            masks = rem[None] if rem.ndim == 2 else rem
            big = [np.asarray(Image.fromarray(m.T.astype(np.uint8)).resize((560, 320), Image.NEAREST)) for m in masks]
            write_instance_h5(h5, ids, np.stack(big))
        size = 64 if tiny else 320
        cfg = load_config(ROOT / "experiments" / "cpu_small.yaml", [f"data.root={root}", f"data.size={size}",
                                                                     "data.frames=8"])
        for w in sorted({0, workers}):
            r = bench_data(cfg, samples=16 if tiny else 200, workers=w)
            out.append({"workers": w, "clips_per_s": r["clips_per_s"], "clip": r["clip"], "frames": "320x560 JPEG"})
    return out


def _ddp_worker(rank: int, world: int, name: str, tiny: bool, batch: int, steps: int, port: int, q) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = torch.cuda.is_available() and not tiny
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.set_num_threads(1)
    cfg = _config(name, tiny)
    from lvas.engine.inference import forward, training_pairs
    from lvas.models.losses.segmentation import build_loss
    from lvas.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg, vocab=[f"w{i}" for i in range(60)], load_weights=False).to(device).train()
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if cuda else None)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn, data = build_loss(cfg), _batch(cfg, batch, device)
    for i in range(steps + 2):
        if i == 2:
            if cuda:
                torch.cuda.synchronize(device)
            t = time.perf_counter()
        out, target = training_pairs(forward(net, data, device, cuda), data, device)
        loss = loss_fn(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if cuda:
        torch.cuda.synchronize(device)
    if rank == 0:
        q.put((time.perf_counter() - t) / steps)
    dist.destroy_process_group()


def ddp(name: str, tiny: bool, batch: int, steps: int) -> dict | None:
    """Step time with every visible GPU (2 gloo processes on the CPU with --tiny) at ``batch`` per
    device, against one process at the same batch: the scaling efficiency."""
    import socket

    import torch.multiprocessing as mp

    world = 2 if tiny else torch.cuda.device_count()
    if world < 2:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    mp.start_processes(_ddp_worker, args=(world, name, tiny, batch, steps, port, q), nprocs=world, join=True,
                       start_method="spawn")
    step_s = q.get()
    return {"world": world, "per_device_batch": batch, "step_s": step_s, "clips_per_s": world * batch / step_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="the CPU version (cpu_small, 4 x 64^2, 3 steps)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20; 3 with --tiny)")
    ap.add_argument("--batch", type=int, default=2, help="clips per step per device")
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, when not in the table")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="data loader workers to time")
    args = ap.parse_args(argv)
    tiny = args.tiny or not torch.cuda.is_available()
    steps = args.steps or (3 if tiny else 20)
    device = torch.device("cpu") if tiny else torch.device("cuda", 0)
    peak_bf16, peak_fp32, device_name = _peak(device, args.peak_tflops)
    report = {"device": device_name, "torch": torch.__version__, "tiny": tiny, "steps": steps, "batch": args.batch,
              "models": [], "data": [], "ddp": None, "determinism": None}
    names = ["cpu_small"] if tiny else PAPER
    for name in names:
        cfg = _config(name, tiny)
        macs = _macs(cfg)
        for bf16 in (True, False):
            r = train_steps(cfg, device, args.batch, steps, bf16)
            tflops = 3 * 2 * macs * r["clips_per_s"] / 1e12
            peak = peak_bf16 if bf16 else peak_fp32
            report["models"].append({
                "experiment": name, "precision": "bf16 + channels_last" if bf16 else "fp32",
                "clip": f"{cfg.data.frames}x{cfg.data.size}x{cfg.data.size}", "gmacs_per_clip": macs / 1e9,
                "clips_per_s": r["clips_per_s"], "step_s": r["step_s"], "peak_mem_gib": r["peak_mem_gib"],
                "tflops": tflops, "mfu": (tflops / peak) if peak else None,
                "finite": all(x == x and abs(x) != float("inf") for x in r["losses"])})
            print(f"{name} {report['models'][-1]['precision']}: {r['clips_per_s']:.2f} clips/s", file=sys.stderr,
                  flush=True)
    cfg = _config(names[0], tiny)
    a = train_steps(cfg, device, args.batch, 3, False, seed=1)["losses"]
    b = train_steps(cfg, device, args.batch, 3, False, seed=1)["losses"]
    report["determinism"] = {"steps": len(a), "max_loss_difference": max(abs(x - y) for x, y in zip(a, b))}
    report["data"] = data_rate(args.workers if not tiny else 1, tiny)
    report["ddp"] = ddp(names[0], tiny, args.batch, steps)
    if report["ddp"]:
        one = next(m for m in report["models"] if m["experiment"] == names[0] and m["precision"] == (
            "fp32" if tiny else "bf16 + channels_last"))
        report["ddp"]["scaling_efficiency"] = report["ddp"]["clips_per_s"] / (report["ddp"]["world"] * one["clips_per_s"])
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"**gpu_check** on {device_name} (torch {torch.__version__}; {steps} steps, batch {args.batch})\n")
    print("| experiment | precision | clip | clips/s | peak mem (GiB) | TFLOP/s | MFU |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for m in report["models"]:
        mfu = f"{100 * m['mfu']:.1f} %" if m["mfu"] is not None else "–"
        print(f"| {m['experiment']} | {m['precision']} | {m['clip']} | {m['clips_per_s']:.2f} | {m['peak_mem_gib']:.2f} | "
              f"{m['tflops']:.3f} | {mfu} |")
    for d in report["data"]:
        print(f"\ndata: {d['clips_per_s']} clips/s with {d['workers']} worker(s) ({d['frames']} -> {d['clip']})", end="")
    print()
    if report["ddp"]:
        r = report["ddp"]
        print(f"DDP: {r['world']} x {r['per_device_batch']}: {r['clips_per_s']:.2f} clips/s "
              f"(scaling efficiency {100 * r['scaling_efficiency']:.0f} %)")
    print(f"determinism: largest loss difference over {report['determinism']['steps']} steps run twice: "
          f"{report['determinism']['max_loss_difference']:.3g}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
