"""CPU threads and DataLoader workers of a run: ``train.threads`` and ``data.workers`` (``auto``).

Measured on the 2-core machine (``benchmarks/threads_workers.py``, one quickstart stage-1 network,
seconds per epoch):

* Small clips (the CPU quickstart, 8 x 64 x 64) load faster than a worker process can hand them
  over: the spatial network takes 3.95 s per epoch with ``workers: 0`` and 6.1 s with 2 (persistent)
  workers. Workers pay off when a clip is expensive to decode and resize (full-size frames) and
  most of all when a GPU waits.
* Two networks side by side with one thread each took 4.33 s (spatial) and 7.87 s (temporal) per
  epoch, against 3.95 s and 6.09 s one after the other with two threads: both done in 7.87 s
  instead of 10.04 s. So a sweep running ``P`` trials on a machine gives each ``cores // P``
  threads; the sweep runner tells its trial processes ``P`` through ``LVAS_PARALLEL_TRIALS``.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass

import torch

# clips at most this many pixels per clip (frames x H x W) are "small": loading one costs less
# than moving it between processes
SMALL_CLIP = 8 * 96 * 96


@dataclass(frozen=True)
class Resources:
    threads: int
    workers: int
    why: str


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parallel_trials() -> int:
    """How many trials share this machine (set by ``lvas sweep --workers``); 1 otherwise."""
    try:
        return max(1, int(os.environ.get("LVAS_PARALLEL_TRIALS", "1")))
    except ValueError:
        return 1


def plan(cfg, device: torch.device) -> Resources:
    """Threads and workers for ``cfg`` on ``device`` (explicit integers in the config win)."""
    share = max(1, cpu_cores() // parallel_trials())
    why = []
    if cfg.train.threads == "auto":
        threads = share
        why.append(f"threads {threads} = {cpu_cores()} cores / {parallel_trials()} trial(s)")
    else:
        threads = int(cfg.train.threads)
    if cfg.data.workers == "auto":
        pixels = cfg.data.frames * cfg.data.size * cfg.data.size
        if device.type == "cuda":
            workers = min(8, share)
            why.append(f"workers {workers}: a GPU waits on loading")
        elif pixels <= SMALL_CLIP or share <= 1:
            workers = 0
            why.append("workers 0: small clips load faster in the training process" if pixels <= SMALL_CLIP
                       else "workers 0: one core for this trial")
        else:
            workers = min(2, share // 2) or 0
            why.append(f"workers {workers}: large clips on CPU")
    else:
        workers = int(cfg.data.workers)
    return Resources(threads, workers, "; ".join(why))


def apply(cfg, device: torch.device) -> Resources:
    """Set torch's thread count for this process; returns the plan (workers for the loaders)."""
    res = plan(cfg, device)
    if torch.get_num_threads() != res.threads:
        torch.set_num_threads(res.threads)
    return res


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def float_path(device: torch.device, threads: int) -> dict[str, str]:
    """What decides a run's floating-point path, as ``fp.*`` tags: CPU model and the vector
    instructions torch dispatches to, torch / oneDNN / CUDA / cuDNN versions, threads and device.
    Two runs with equal tags reproduce to the last digit (on CPU); otherwise only within intervals."""
    onednn = re.search(r"(?:oneDNN|MKL-DNN) (v[\d.]+)", torch.__config__.show())
    tags = {"fp.cpu": cpu_model(), "fp.cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "fp.torch": torch.__version__, "fp.onednn": onednn.group(1) if onednn else "none",
            "fp.threads": str(threads), "fp.device": device.type}
    if device.type == "cuda":
        tags.update({"fp.device": torch.cuda.get_device_name(device), "fp.cuda": str(torch.version.cuda),
                     "fp.cudnn": str(torch.backends.cudnn.version())})
    return tags

