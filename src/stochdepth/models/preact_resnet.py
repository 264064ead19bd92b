"""Pre-activation ResNet (He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016).

The CIFAR bottleneck network of that paper: a 3x3 stem with 16 filters, 3 stages of n
bottleneck blocks (BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1, with 16/32/64 bottleneck widths and
4x as many output channels), then BN-ReLU, global average pooling and a linear classifier;
depth 9n + 2. Identity blocks keep their BN-ReLU inside the branch, so the shortcut is a pure
identity. Blocks that change shape share their first BN-ReLU between the 1x1 projection
shortcut and the branch (the mechanism's shared pre-activation). Nothing follows the
addition. The branch ends with a convolution, which is where ``fold_survival`` puts p_l.
A block that halves the feature map has its stride on the first 1x1 convolution, as in the
authors' code (KaimingHe/resnet-1k-layers, ``resnet-pre-act.lua``); the parameter count is
the same wherever the stride sits.

================== ===== =============
name               n     parameters
================== ===== =============
preact_resnet164   18    1.7M
preact_resnet1001  111   10.33M
================== ===== =============
"""

from __future__ import annotations

import torch
from torch import nn

from stochdepth.depth import ResidualBlock
from stochdepth.models.layers import bn_relu, classifier_head, conv1x1, conv3x3, init_weights, residual_stages
from stochdepth.models.registry import register_model

BOTTLENECK_WIDTHS = (16, 32, 64)
EXPANSION = 4


def preact_bottleneck(in_channels: int, width: int, stride: int) -> ResidualBlock:
    """BN-ReLU-1x1 (stride), BN-ReLU-3x3, BN-ReLU-1x1 to ``EXPANSION * width`` channels."""
    out_channels = width * EXPANSION
    changes_shape = stride != 1 or in_channels != out_channels
    first = [conv1x1(in_channels, width, stride)]
    rest = [bn_relu(width), conv3x3(width, width), bn_relu(width), conv1x1(width, out_channels)]
    if changes_shape:
        return ResidualBlock(
            nn.Sequential(*first, *rest),
            shortcut=conv1x1(in_channels, out_channels, stride),
            pre_activation=bn_relu(in_channels),
        )
    return ResidualBlock(nn.Sequential(bn_relu(in_channels), *first, *rest))


class PreActResNet(nn.Module):
    """Stem, pre-activation bottleneck blocks, BN-ReLU, head; ``blocks_per_stage`` is n."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, BOTTLENECK_WIDTHS[0]))
        self.blocks, channels = residual_stages(
            BOTTLENECK_WIDTHS[0], BOTTLENECK_WIDTHS, (blocks_per_stage,) * 3, EXPANSION, preact_bottleneck
        )
        self.final_activation = bn_relu(channels)
        self.head = classifier_head(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.final_activation(self.blocks(self.stem(x))))


def preact_resnet(depth: int, *, num_classes: int = 10, in_channels: int = 3) -> PreActResNet:
    """A plain pre-activation bottleneck ResNet of ``depth`` = 9n + 2 layers (n >= 1)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 11 or (depth - 2) % 9:
        raise ValueError(f"pre-activation ResNet depth must be 9n + 2 with n >= 1 (11, 164, 1001, ...), got {depth!r}")
    return PreActResNet((depth - 2) // 9, num_classes, in_channels)


@register_model(family="pre-activation ResNet", depth=164, parameters=1_703_258)
def preact_resnet164(**kwargs: object) -> nn.Module:
    """Pre-activation ResNet-164 (n = 18), 1.7M parameters."""
    return preact_resnet(164, **kwargs)


@register_model(family="pre-activation ResNet", depth=1001, parameters=10_327_706)
def preact_resnet1001(**kwargs: object) -> nn.Module:
    """Pre-activation ResNet-1001 (n = 111), 10.33M parameters."""
    return preact_resnet(1001, **kwargs)
