"""BatchNorm over the global batch under DDP (``train.sync_bn``), on GPUs and on CPUs alike.

On CUDA this is ``torch.nn.SyncBatchNorm``. PyTorch's SyncBatchNorm refuses CPU tensors, so on CPU
(gloo) each training-mode BatchNorm becomes :class:`AllReduceBatchNorm`: the batch mean and variance
are computed over every process's samples with two differentiable all-reduces (the sum, then the
sum of squared deviations from the global mean: the same two-pass arithmetic as a single process's
BatchNorm, not E[x^2] - E[x]^2), so W processes with B / W samples each normalise exactly as one
process with B (up to the order of the float sums). The state dict keys are BatchNorm's own, so
checkpoints do not change. Frozen BatchNorm layers (weights not trained, kept in eval mode) are
left as they are: they use their running statistics.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm (any dimension) whose training-mode statistics cover every process's batch.

    forward: x (N, C, *) -> (N, C, *)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        xf = x.float()
        count = all_reduce(torch.tensor([xf.numel() / xf.shape[1]], dtype=torch.float64, device=x.device))
        n = count[0].to(xf.dtype)
        mean = all_reduce(xf.sum(dims)) / n
        var = all_reduce(((xf - mean.view(shape)) ** 2).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                unbiased = var.detach() * n / max(float(n) - 1, 1.0)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """Every trained BatchNorm of ``model`` made to see the global batch (see the module docstring);
    returns the model (converted in place where possible)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(model: nn.Module) -> nn.Module:
    """Swap the class of every trained BatchNorm in place: its parameters, buffers and hooks stay the
    same objects (an optimiser or a recipe's list of trained parameters still holds them)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, AllReduceBatchNorm):
            frozen = m.weight is not None and not any(p.requires_grad for p in m.parameters())
            if not frozen:
                m.__class__ = AllReduceBatchNorm
    return model
