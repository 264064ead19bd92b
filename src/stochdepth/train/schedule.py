"""The learning-rate schedule: optional constant warm-up, then step drops at fractions of the run."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler

from stochdepth.config import OptimConfig


def milestone_epochs(optim: OptimConfig) -> list[int]:
    """The epochs (0-based) from which each lr drop applies: ``round(fraction * epochs)``."""
    return [round(fraction * optim.epochs) for fraction in optim.lr_milestones]


def learning_rate(epoch: int, optim: OptimConfig) -> float:
    """The learning rate during 0-based ``epoch``.

    ``warmup_lr`` for the first ``warmup_epochs`` epochs (the paper's 1202-layer run: 0.01
    for 10 epochs), then ``lr`` multiplied by ``lr_decay`` once per milestone passed (the
    paper's CIFAR recipe: 0.1, divided by 10 at 50% and 75% of the epochs).
    """
    if epoch < optim.warmup_epochs:
        return optim.warmup_lr
    drops = sum(epoch >= milestone for milestone in milestone_epochs(optim))
    return optim.lr * optim.lr_decay**drops


class EpochSchedule(LRScheduler):
    """Sets every group's lr to :func:`learning_rate` of the epoch; call :meth:`step` once per epoch.

    Its state is the epoch alone: the plan comes from the configuration, so a run resumed
    with more epochs re-plans its milestones for the new length.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, optim: OptimConfig) -> None:
        self.optim = optim
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [learning_rate(self.last_epoch, self.optim)] * len(self.optimizer.param_groups)

    def state_dict(self) -> dict[str, int]:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.last_epoch = int(state_dict["last_epoch"])
        lr = learning_rate(self.last_epoch, self.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr] * len(self.optimizer.param_groups)
