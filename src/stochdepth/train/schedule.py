"""The learning-rate schedule: optional constant warm-up, then step drops at fractions of the run.

The schedule is stepped by iteration, with milestones at fractions of the run's total
iterations: on a short run (1 or 2 epochs) a drop lands where its fraction says rather than
being rounded to a whole epoch. Where a milestone falls on a whole epoch (the paper's 50%
and 75% of 500 epochs) the drop comes at that epoch's first iteration: 250 epochs at 0.1, then
125 at 0.01 and 125 at 0.001, as the paper's text says ("after epochs 250 and 375"). The
paper's ``main.lua`` drops one epoch earlier (249, 125, 126: it compares a 1-based epoch
counter with ``< 0.5 * maxEpochs``). The learning rate is a function of the iteration alone, so a checkpoint
needs no scheduler state, and a run resumed with more epochs re-plans its milestones.
"""

from __future__ import annotations

import torch

from stochdepth.config import OptimConfig


def milestone_iterations(optim: OptimConfig, steps_per_epoch: int) -> list[int]:
    """The iterations (0-based) from which each lr drop applies: ``round(fraction * epochs * steps_per_epoch)``."""
    total = optim.epochs * steps_per_epoch
    return [round(fraction * total) for fraction in optim.lr_milestones]


def learning_rate(iteration: int, optim: OptimConfig, steps_per_epoch: int) -> float:
    """The learning rate of 0-based ``iteration`` in a run of ``steps_per_epoch`` steps per epoch.

    ``warmup_lr`` for the first ``warmup_epochs`` epochs (the paper's 1202-layer run: 0.01
    for 10 epochs), then ``lr`` multiplied by ``lr_decay`` once per milestone passed (the
    paper's CIFAR recipe: 0.1, divided by 10 at 50% and 75% of the run).
    """
    if iteration < optim.warmup_epochs * steps_per_epoch:
        return optim.warmup_lr
    drops = sum(iteration >= milestone for milestone in milestone_iterations(optim, steps_per_epoch))
    return optim.lr * optim.lr_decay**drops


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group of ``optimizer`` the learning rate ``lr``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
