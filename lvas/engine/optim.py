"""Optimizers and learning-rate schedules, one registered entry each (``train.optimizer``,
``train.scheduler``; ``lvas list optimizer``). The paper (§4.2): Adam, lr / 10 every 8 epochs; LBDT:
AdamW, x 0.5 at epochs 10, 12, 14."""

from __future__ import annotations

import torch

from lvas.registry import OPTIMIZERS, SCHEDULERS
from lvas.settings import Milestones, NonNegativeFloat, PositiveFloat, PositiveInt


@OPTIMIZERS.register("adam")
def adam(params, lr: float, *, weight_decay: NonNegativeFloat = 0.0) -> torch.optim.Optimizer:
    """Adam (CSTM, ACGA), L2 penalty ``weight_decay`` added to the gradients."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(params, lr: float, *, weight_decay: NonNegativeFloat = 0.0) -> torch.optim.Optimizer:
    """AdamW (LBDT: weight decay 5e-4), decoupled weight decay."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(params, lr: float, *, momentum: NonNegativeFloat = 0.9, weight_decay: NonNegativeFloat = 0.0) -> torch.optim.Optimizer:
    """SGD with momentum. Its step is proportional to the gradient, so a tiny difference in the
    gradient stays tiny in the weights (Adam divides each element by its own magnitude, which turns
    float noise in a near-zero gradient into a step of up to lr)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@SCHEDULERS.register("step")
def step(optimizer, *, step: PositiveInt = 8, gamma: PositiveFloat = 0.1):
    """lr x ``gamma`` every ``step`` epochs (CSTM / ACGA: x 0.1 every 8)."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=gamma)


@SCHEDULERS.register("multistep")
def multistep(optimizer, *, milestones: Milestones = (), gamma: PositiveFloat = 0.1):
    """lr x ``gamma`` at each epoch of ``milestones`` (LBDT: x 0.5 at 10, 12, 14)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)


def build_optimizer(cfg, params, lr: float):
    """The config's optimizer over ``params`` and its scheduler."""
    opt = OPTIMIZERS.build(cfg.train.optimizer.name, cfg.train.optimizer.settings(), params=params, lr=lr)
    return opt, SCHEDULERS.build(cfg.train.scheduler.name, cfg.train.scheduler.settings(), optimizer=opt)
