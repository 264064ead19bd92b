"""torchvision's ResNet blocks (resnet18 to resnet152, wide_resnet50_2/101_2, resnext)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torchvision.models import resnet

from stochdepth.depth.adapters import SwappedBlock, parameters_outside
from stochdepth.depth.residual import stochastic_residual


class TorchvisionBlock(SwappedBlock):
    """``relu(downsample(x) + branch(x))``; an identity shortcut carries a ReLU output, which the ReLU keeps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return stochastic_residual(
            shortcut, x, self.branch, self, 0, self.relu, dropped_returns_shortcut=self.downsample is None
        )

    def branch_parameters(self, which: int) -> Iterable[nn.Parameter]:
        return parameters_outside(self, self.downsample)


class TorchvisionBasicBlock(TorchvisionBlock, resnet.BasicBlock):
    plain_class = resnet.BasicBlock

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def branch_ends(self) -> list[nn.Module]:
        return [self.bn2]


class TorchvisionBottleneck(TorchvisionBlock, resnet.Bottleneck):
    plain_class = resnet.Bottleneck

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x))

    def branch_ends(self) -> list[nn.Module]:
        return [self.bn3]


ADAPTED = (TorchvisionBasicBlock, TorchvisionBottleneck)
