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
        (out["logits"].mean() + sum(a.mean() for a in out.get("aux") or [])).backward()
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


def write_tiny_glove(path, words, dim: int = 300, seed: int = 0):
    """A GloVe text file (``word v_1 ... v_dim`` per line, the real format) for ``words``: what a
    paper-size run reads instead of the 5 GB release, so the real loading code runs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for w in words:
            f.write(w + " " + " ".join(f"{x:.5f}" for x in rng.normal(0, 0.3, dim)) + "\n")
    return path


def bench_train_overrides(cfg, root, glove, batch: int) -> list[str]:
    """The changes that make ``cfg`` train one optimiser step on the synthetic set at its own input
    size, with no download: encoders from scratch, the tiny GloVe file, no MLflow, one batch. (A
    Ref-YouTube-VOS experiment reads the synthetic set in the A2D layout: its model and input size
    are what is measured, not its dataset reader.)"""
    from lvas.models.model import model_plan

    plan = model_plan(cfg)
    over = [f"data.root={root}", "data.dataset=synth", "data.train_split=train", "data.test_split=test", "data.workers=0", f"train.batch_size={batch}",
            "train.epochs=1", "train.limit_batches=1", "train.recipe=joint", "train.select=last", "train.drop_last=false"]
    for slot in ("model.spatial", "model.temporal"):
        if slot in plan:
            over.append(f"{slot}.pretrained=none")
    if cfg.model.text.embedding != "learned":
        over.append(f"model.text.glove_path={glove}")
    if cfg.model.text.tokenizer == "subword":  # a pretrained language model: its tokenizer's files, random weights
        from pathlib import Path

        from lvas.data.vocab import write_byte_bpe_tokenizer

        folder = write_byte_bpe_tokenizer(Path(glove).with_name("tokenizer"))
        over += [f"model.text.tokenizer_path={folder}", "model.text.pretrained=false"]
    return over


def bench_train(path, overrides=(), batch: int = 2, device: str | None = None, workdir=None) -> dict:
    """One optimiser step and the test split's evaluation of the experiment at its real input size
    (``data.frames`` x ``data.size``^2) on synthetic frames of that size, through the real training
    path (``train_model``): the dataset loader, the GloVe reader (on a tiny file it writes), the
    loss, the optimiser, the checkpoint, the protocol. Returns seconds per phase and the peak RSS."""
    import tempfile
    from pathlib import Path

    from lvas.config import load_config
    from lvas.data.a2d import A2DSentences
    from lvas.data.synthetic import generate
    from lvas.engine.trainer import train_model

    cfg0 = load_config(path, list(overrides))
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        d = Path(d)
        t0 = time.perf_counter()
        generate(d / "synth", videos=5, frames=max(cfg0.data.frames, 2), size=cfg0.data.size, progress=False)
        words = A2DSentences.build_vocab(d / "synth").itos[2:]
        glove = write_tiny_glove(d / "glove.txt", words)
        over = [*overrides, *bench_train_overrides(cfg0, d / "synth", glove, batch)]
        if device:
            over.append(f"train.device={device}")
        cfg = load_config(path, over)
        t_data = time.perf_counter() - t0
        marks: dict[str, float] = {}
        t1 = time.perf_counter()
        result = train_model(cfg, d / "run", resume=False, progress=False,
                             epoch_callback=lambda epoch, metrics, stage: marks.setdefault("trained", time.perf_counter()))
        t_end = time.perf_counter()
    return {"config": cfg.name, "clip": f"{batch}x{cfg.data.frames}x{cfg.data.size}x{cfg.data.size}",
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
            "synthetic_data_s": round(t_data, 1), "build_and_one_step_s": round(marks["trained"] - t1, 1),
            "evaluate_test_s": round(t_end - marks["trained"], 1), "test_samples": int(result.test.get("n", 0)),
            "loss": round(result.history[-1]["train_loss"], 4), "peak_rss_gib": round(_peak_rss_gib(), 2)}
