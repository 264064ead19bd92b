"""Gradient magnitudes during training (the paper's section 5 and Fig. 7).

Every N iterations the trainer records the mean absolute gradient of the stem
convolution's weights (the paper plots the first convolutional layer) and of each residual
block's first convolution (a transformer block's first linear layer), before the optimizer
step. A block whose branch did not run in that step (its gradient is an allocated zero, not
a measurement) is recorded as ``null`` and left out of any average; in data-parallel sample
mode a branch that ran on any process's rows ran. Between recording steps this costs nothing; a recording step
reads all values in one host synchronisation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from stochdepth.depth import GateGenerator, stochastic_blocks


def first_weight_layer(module: nn.Module) -> nn.Conv2d | nn.Linear:
    """The first ``Conv2d`` (or, in a block without one, ``Linear``) of ``module`` in registration order."""
    for kind in (nn.Conv2d, nn.Linear):
        for child in module.modules():
            if isinstance(child, kind):
                return child
    raise ValueError(f"no convolution or linear layer in {type(module).__name__}")


def _branch_module(block: nn.Module) -> nn.Module:
    """The block's branch where it is a module of its own (this library's blocks), else the block itself."""
    branch = getattr(block, "branch", None)
    return branch if isinstance(branch, nn.Module) else block


class GradientRecorder:
    """Reads the stem's and each block's first-convolution mean absolute gradient."""

    def __init__(self, model: nn.Module, gates: GateGenerator) -> None:
        self.stem = first_weight_layer(model)
        blocks = list(stochastic_blocks(model))
        self.block_convolutions = [first_weight_layer(_branch_module(block)) for block in blocks]
        self.block_indices = [block.first_index for block in blocks]
        self.gates = gates

    def measure(self) -> dict[str, Any]:
        """``{"stem": value, "blocks": [value or None per block]}`` for the gradients of the last step."""
        layers = [self.stem, *self.block_convolutions]
        device = self.stem.weight.device
        values = torch.stack(
            [
                layer.weight.grad.detach().abs().mean().float()
                if layer.weight.grad is not None
                else torch.tensor(math.nan, device=device)
                for layer in layers
            ]
        ).tolist()
        step = self.gates.step
        ran = [step is None or step.runs_anywhere[index] for index in self.block_indices]
        blocks = [value if block_ran else None for value, block_ran in zip(values[1:], ran)]
        return {"stem": None if math.isnan(values[0]) else values[0], "blocks": blocks}
