"""The global batch, whatever the number of processes: which samples each process takes at each
optimiser step, in how many micro-batches, and how much each micro-batch's loss weighs.

``train.batch_size`` is the global batch B: every optimiser step sees B samples (fewer at an epoch's
incomplete last step), the same B samples in the same order for 1, 2 or 8 processes. With W
processes the step's samples are dealt round-robin (process r takes positions r, r + W, ...), so the
shares differ by at most one; each share is cut into micro-batches of at most
``train.max_per_device_batch`` (``train.accumulate: auto``) or into ``train.accumulate`` pieces,
whose gradients are accumulated before the step.

A micro-batch's loss is the mean over its n samples; the loop multiplies it by ``n · W / b`` (b: the
step's sample count over all processes) before ``backward``. DistributedDataParallel averages the
gradients of the W processes, so the optimiser sees

    1/W · Σ_r Σ_micro (n · W / b) · ∇mean_micro = 1/b · Σ_samples ∇loss_i,

the gradient of the mean loss over the step's b samples: a single process at batch B. (Exact for
losses that are means over samples, as every registered loss is; BatchNorm in training mode sees
its micro-batch — ``train.sync_bn`` extends it over the processes, not over accumulated pieces.) A
process with no sample left at the last step of an epoch repeats one with weight 0, so every
process takes part in every gradient exchange.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lvas.errors import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    """How a global batch is split: per process, per micro-batch."""

    global_batch: int
    world: int
    per_device: int  # samples a process takes per step (the largest share)
    accumulate: int  # micro-batches per step
    micro: int  # samples per micro-batch (the largest)

    @property
    def effective(self) -> int:
        return self.global_batch

    def describe(self) -> str:
        return (f"global batch {self.global_batch} = {self.world} process(es) x {self.per_device} "
                f"({self.accumulate} micro-batch(es) of at most {self.micro})")

    def as_params(self) -> dict[str, int]:
        """What a run records (MLflow params ``dist.*``)."""
        return {"dist.world_size": self.world, "dist.per_device_batch": self.per_device,
                "dist.accumulate": self.accumulate, "dist.micro_batch": self.micro,
                "dist.effective_batch": self.effective}


def plan_batches(batch_size: int, world: int, max_per_device: int = 0, accumulate: int | str = "auto") -> BatchPlan:
    """The split of ``batch_size`` over ``world`` processes (see the module docstring).

    ``max_per_device`` (0: no limit) caps a micro-batch; ``accumulate`` is ``auto`` (as few pieces as
    the cap allows) or a number of pieces."""
    if batch_size < world:
        raise ConfigError(f"train.batch_size: {batch_size} is the global batch; it cannot feed {world} processes "
                          f"(at least one sample each): raise it to {world} or more, or run fewer processes")
    per_device = math.ceil(batch_size / world)
    if accumulate == "auto":
        steps = math.ceil(per_device / max_per_device) if max_per_device else 1
    else:
        steps = int(accumulate)
        if steps > per_device:
            raise ConfigError(f"train.accumulate: {steps} pieces of a per-process batch of {per_device} "
                              f"(train.batch_size {batch_size} over {world} process(es)) would leave some empty")
    micro = math.ceil(per_device / steps)
    if max_per_device and micro > max_per_device:
        raise ConfigError(f"train.accumulate: {steps} pieces of {per_device} samples are {micro} each, over "
                          f"train.max_per_device_batch {max_per_device}: use accumulate: auto or more pieces")
    return BatchPlan(batch_size, world, per_device, steps, micro)


@dataclass(frozen=True)
class MicroBatch:
    """The dataset indices of one micro-batch of this process, its loss weight, and whether the
    optimiser steps after it."""

    indices: list[int]
    weight: float
    last: bool
    step_samples: int  # b: samples of this step over every process


def micro_batches(order: list[int], plan: BatchPlan, rank: int, drop_last: bool = False) -> list[MicroBatch]:
    """This process's micro-batches for one epoch of ``order`` (the epoch's global sample order)."""
    out: list[MicroBatch] = []
    B, W = plan.global_batch, plan.world
    for start in range(0, len(order), B):
        step = order[start:start + B]
        if drop_last and len(step) < B:
            break
        share = step[rank::W]
        b = len(step)
        if not share:  # fewer samples than processes at the epoch's end: take part with weight 0
            pieces = [[step[0]]]
            weights = [0.0]
        else:
            k = min(plan.accumulate, len(share))
            size = math.ceil(len(share) / k)
            pieces = [share[i:i + size] for i in range(0, len(share), size)]
            weights = [len(p) * W / b for p in pieces]
        for i, (p, w) in enumerate(zip(pieces, weights)):
            out.append(MicroBatch(p, w, i == len(pieces) - 1, b))
    return out


class MicroBatchSampler(torch.utils.data.Sampler):
    """A batch sampler over the micro-batches of :func:`micro_batches` (one epoch at a time:
    ``set_epoch`` re-deals the seeded order)."""

    def __init__(self, order_of_epoch, plan: BatchPlan, rank: int, drop_last: bool = False) -> None:
        self.order_of_epoch, self.plan, self.rank, self.drop_last = order_of_epoch, plan, rank, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[MicroBatch]:
        return micro_batches(self.order_of_epoch(self.epoch), self.plan, self.rank, self.drop_last)

    def __iter__(self):
        return iter([m.indices for m in self.batches()])

    def __len__(self) -> int:
        return len(self.batches())
