"""CIFAR ResNet (He et al., "Deep Residual Learning for Image Recognition", 2015, section 4.2).

The network the stochastic-depth paper trains on CIFAR and SVHN: a 3x3 stem with 16
filters, 3 stages of n basic blocks with 16, 32 and 64 filters (the first block of the
second and third stages halves the feature map), global average pooling and a linear
classifier; depth 6n + 2. Basic block: Conv-BN-ReLU-Conv-BN, add, ReLU. Transition
shortcuts are "option A" as the stochastic-depth paper's code builds them: a 2x2 average
pooling of stride 2 plus zero channel padding, so the network has no projection parameters.

=========== === ============ ===================================
name        n   parameters   multiply-adds (32x32, 10 classes)
=========== === ============ ===================================
resnet20    3   0.27M        41M
resnet56    9   0.85M        126M
resnet110   18  1.7M         253M
resnet152   25  2.4M         352M (the paper's SVHN network)
resnet1202  200 19.4M        2.83G
=========== === ============ ===================================
"""

from __future__ import annotations

import torch
from torch import nn

from stochdepth.depth import ResidualBlock
from stochdepth.models.layers import OptionAShortcut, classifier_head, conv3x3, init_weights, residual_stages
from stochdepth.models.registry import register_model

STAGE_WIDTHS = (16, 32, 64)


def basic_block(in_channels: int, out_channels: int, stride: int) -> ResidualBlock:
    """Conv-BN-ReLU-Conv-BN branch, identity or option-A shortcut, ReLU after the addition.

    The block's input is a ReLU output and both shortcuts keep it non-negative, so the ReLU
    leaves a dropped block's shortcut unchanged (``dropped_returns_shortcut``, eq. 2).
    """
    branch = nn.Sequential(
        conv3x3(in_channels, out_channels, stride),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        conv3x3(out_channels, out_channels),
        nn.BatchNorm2d(out_channels),
    )
    if stride == 1 and in_channels == out_channels:
        shortcut = None
    else:
        shortcut = OptionAShortcut(stride, out_channels - in_channels)
    return ResidualBlock(branch, shortcut, post_activation=nn.ReLU(), dropped_returns_shortcut=True)


class CifarResNet(nn.Module):
    """Stem, residual blocks, head; ``blocks_per_stage`` is n."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            conv3x3(in_channels, STAGE_WIDTHS[0]), nn.BatchNorm2d(STAGE_WIDTHS[0]), nn.ReLU(inplace=True)
        )
        self.blocks, channels = residual_stages(STAGE_WIDTHS[0], STAGE_WIDTHS, (blocks_per_stage,) * 3, 1, basic_block)
        self.head = classifier_head(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def cifar_resnet(depth: int, *, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """A plain CIFAR ResNet of ``depth`` = 6n + 2 layers (n >= 1); ``create_model`` adds stochastic depth."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 56, 110, ...), got {depth!r}")
    return CifarResNet((depth - 2) // 6, num_classes, in_channels)


@register_model(family="CIFAR ResNet", depth=8, parameters=75_290)
def resnet8(**kwargs: object) -> nn.Module:
    """CIFAR ResNet-8 (n = 1): the smallest, for tests and quick checks."""
    return cifar_resnet(8, **kwargs)


@register_model(family="CIFAR ResNet", depth=20, parameters=269_722)
def resnet20(**kwargs: object) -> nn.Module:
    """CIFAR ResNet-20 (n = 3)."""
    return cifar_resnet(20, **kwargs)


@register_model(family="CIFAR ResNet", depth=32, parameters=464_154)
def resnet32(**kwargs: object) -> nn.Module:
    """CIFAR ResNet-32 (n = 5)."""
    return cifar_resnet(32, **kwargs)


@register_model(family="CIFAR ResNet", depth=44, parameters=658_586)
def resnet44(**kwargs: object) -> nn.Module:
    """CIFAR ResNet-44 (n = 7)."""
    return cifar_resnet(44, **kwargs)


@register_model(family="CIFAR ResNet", depth=56, parameters=853_018)
def resnet56(**kwargs: object) -> nn.Module:
    """CIFAR ResNet-56 (n = 9)."""
    return cifar_resnet(56, **kwargs)


@register_model(family="CIFAR ResNet", depth=110, parameters=1_727_962)
def resnet110(**kwargs: object) -> nn.Module:
    """CIFAR ResNet-110 (n = 18): the paper's CIFAR network."""
    return cifar_resnet(110, **kwargs)


@register_model(family="CIFAR ResNet", depth=152, parameters=2_408_474)
def resnet152(**kwargs: object) -> nn.Module:
    """CIFAR-style ResNet-152 (n = 25): the paper's SVHN network."""
    return cifar_resnet(152, **kwargs)


@register_model(family="CIFAR ResNet", depth=1202, parameters=19_421_274)
def resnet1202(**kwargs: object) -> nn.Module:
    """CIFAR ResNet-1202 (n = 200): the paper's deepest network."""
    return cifar_resnet(1202, **kwargs)
