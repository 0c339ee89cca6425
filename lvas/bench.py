"""Benchmarks (``lvas bench ...``): wall time and peak memory, reported, never asserted in tests."""

from __future__ import annotations

import platform
import resource
import time

import torch


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def bench_model(cfg, frames: int | None = None, size: int | None = None, batch: int = 1, repeats: int = 3,
                device: str | None = None) -> dict:
    """Forward (inference) and forward+backward (training) seconds for one batch of clips.

    Peak memory is the process's peak RSS on CPU (includes the model and PyTorch itself; the
    value after building the model is reported too) and ``max_memory_allocated`` on CUDA.
    """
    from lvas.models import build_model

    frames = frames or cfg.data.frames
    size = size or cfg.data.size
    from lvas.engine.setup import resolve_device

    dev = resolve_device(device or "auto")
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False).to(dev)
    if cfg.train.channels_last:  # as training and evaluation run it
        from lvas.models.base import to_channels_last

        to_channels_last(model)
    rss_model = _peak_rss_gib()
    clip = torch.rand(batch, 3, frames, size, size, device=dev)
    tokens = torch.randint(1, 50, (batch, 20), device=dev)
    mask = torch.zeros(batch, 20, dtype=torch.bool, device=dev)
    mask[:, :8] = True

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    model.eval()
    fwd = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            sync()
            t = time.perf_counter()
            model(clip, tokens, mask)
            sync()
            fwd.append(time.perf_counter() - t)
    rss_fwd = _peak_rss_gib()
    cuda_fwd = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    model.train()
    bwd = []
    for _ in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        sync()
        t = time.perf_counter()
        out = model(clip, tokens, mask)
        (out["logits"].mean() + sum(a.mean() for a in out["aux"])).backward()
        sync()
        bwd.append(time.perf_counter() - t)
    rss_train = _peak_rss_gib()
    return {
        "config": cfg.name, "device": str(dev), "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads", "clip": f"{batch}x{frames}x{size}x{size}",
        "forward_s": round(min(fwd[1:]), 4), "forward_backward_s": round(min(bwd[1:]), 4),
        "train_clips_per_s": round(batch / min(bwd[1:]), 2), "inference_clips_per_s": round(batch / min(fwd[1:]), 2),
        "peak_rss_after_build_gib": round(rss_model, 2), "peak_rss_forward_gib": round(rss_fwd, 2),
        "peak_rss_train_gib": round(rss_train, 2),
        "cuda_peak_forward_gib": cuda_fwd,
        "cuda_peak_train_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
    }


def bench_data(cfg, samples: int = 200, workers: int = 0) -> dict:
    """Clips per second of the config's training set through a DataLoader (batch 1).

    ``workers=0`` measures the loading code in the main process (= one worker's throughput).
    """
    from torch.utils.data import DataLoader, Subset

    from lvas.data import build_dataset, collate

    ds = build_dataset(cfg, cfg.data.train_split)
    n = min(samples, len(ds))
    loader = DataLoader(Subset(ds, range(n)), batch_size=1, num_workers=workers, collate_fn=collate)
    it = iter(loader)
    next(it)  # start-up (worker spawn) is not throughput
    t = time.perf_counter()
    count = 1
    for _ in it:
        count += 1
    dt = time.perf_counter() - t
    rate = (count - 1) / dt
    return {"dataset": cfg.data.dataset.name, "root": cfg.data.root,
            "clip": f"{cfg.data.frames}x{cfg.data.size}x{cfg.data.size}", "workers": workers,
            "clips": count - 1, "clips_per_s": round(rate, 1),
            "clips_per_s_per_worker": round(rate / max(1, workers), 1)}
