"""Small building blocks shared by the model families."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows or precedes it)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


def bn_relu(channels: int) -> nn.Sequential:
    """BatchNorm followed by ReLU: the pre-activation of He et al. 2016."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class OptionAShortcut(nn.Module):
    """He et al. 2015's "option A" shortcut as the stochastic-depth paper's code builds it.

    ``ResidualDrop.lua`` downsamples with a ``stride`` x ``stride`` average pooling of stride
    ``stride`` and then appends zero channels. The pooling uses ``ceil_mode`` so that an odd
    size such as 7x7 gives the 4x4 of the strided convolution beside it (the last, partial
    window averages the pixels it covers); on even sizes it is exactly the paper's pooling.
    """

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


def classifier_head(in_features: int, num_classes: int) -> nn.Sequential:
    """Global average pooling, then a fully connected layer."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_features, num_classes))


def init_weights(model: nn.Module) -> None:
    """He (fan-out) initialisation for convolutions, BatchNorm at identity, zero linear bias."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)


def residual_stages(
    in_channels: int,
    stage_widths: tuple[int, ...],
    stage_depths: tuple[int, ...],
    expansion: int,
    make_block: Callable[[int, int, int], nn.Module],
) -> tuple[nn.Sequential, int]:
    """The residual blocks of all stages, in forward order, and the channels they end with.

    Stage s has ``stage_depths[s]`` blocks built by ``make_block(in_channels, width, stride)``
    with ``width = stage_widths[s]`` and ``expansion * width`` output channels; the first
    block of every stage but the first halves the feature map (stride 2).
    """
    blocks = []
    channels = in_channels
    for stage, (width, depth) in enumerate(zip(stage_widths, stage_depths, strict=True)):
        for index in range(depth):
            blocks.append(make_block(channels, width, 2 if stage > 0 and index == 0 else 1))
            channels = width * expansion
    return nn.Sequential(*blocks), channels
