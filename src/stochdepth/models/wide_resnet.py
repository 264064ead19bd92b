"""Wide ResNet (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

WRN-d-k: a 3x3 stem with 16 filters, 3 stages of N blocks with 16k, 32k and 64k filters,
then BN-ReLU, global average pooling and a linear classifier. Blocks use the BN-ReLU-conv
ordering; dropout sits between the convolutions of a block (``dropout_rate``, 0.3 in the
paper's CIFAR runs). Blocks that change shape share their first BN-ReLU between a 1x1
projection shortcut and the branch (the mechanism's shared pre-activation); the others have
an identity shortcut.

The block type B(k_1, ..., k_m) lists the kernel sizes of the block's convolutions
(section 2.1): B(3,3) is the default; B(3,1,3), B(1,3,1), B(1,3), B(3,1) and B(3,1,1) are the
others the paper compares. The deepening factor l (section 2.2) gives a block of l 3x3
convolutions, B(3,...,3). Depth counts every convolution on the main path plus the stem,
the classifier and the projection shortcuts: d = 3 N m + 4, so N = (d - 4) / (3 m).
A block's stride sits on its first 3x3 convolution.

============ ============ ===========
name         block type   parameters
============ ============ ===========
wrn_16_8     B(3,3)       11.0M
wrn_28_10    B(3,3)       36.5M
wrn_40_4     B(3,3)       8.9M
============ ============ ===========
"""

from __future__ import annotations

import torch
from torch import nn

from stochdepth.depth import ResidualBlock
from stochdepth.models.layers import bn_relu, classifier_head, conv1x1, conv3x3, init_weights, residual_stages
from stochdepth.models.registry import register_model

BLOCK_TYPES = ((3, 3), (3, 1, 3), (1, 3, 1), (1, 3), (3, 1), (3, 1, 1))
STAGE_WIDTHS = (16, 32, 64)


def wide_block(
    in_channels: int, out_channels: int, stride: int, kernel_sizes: tuple[int, ...], dropout_rate: float
) -> ResidualBlock:
    """BN-ReLU-conv for each kernel size, dropout between the convolutions."""
    strided = kernel_sizes.index(3) if 3 in kernel_sizes else 0
    changes_shape = stride != 1 or in_channels != out_channels
    layers: list[nn.Module] = []
    channels = in_channels
    for index, kernel in enumerate(kernel_sizes):
        if index > 0 or not changes_shape:
            layers.append(bn_relu(channels))
        if index > 0 and dropout_rate > 0:
            layers.append(nn.Dropout(dropout_rate))
        layer_stride = stride if index == strided else 1
        layers.append(nn.Conv2d(channels, out_channels, kernel, stride=layer_stride, padding=kernel // 2, bias=False))
        channels = out_channels
    if changes_shape:
        return ResidualBlock(
            nn.Sequential(*layers),
            shortcut=conv1x1(in_channels, out_channels, stride),
            pre_activation=bn_relu(in_channels),
        )
    return ResidualBlock(nn.Sequential(*layers))


class WideResNet(nn.Module):
    """Stem, wide blocks, BN-ReLU, head."""

    def __init__(
        self,
        blocks_per_stage: int,
        widen_factor: int,
        kernel_sizes: tuple[int, ...],
        dropout_rate: float,
        num_classes: int,
        in_channels: int,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, STAGE_WIDTHS[0]))
        self.blocks, channels = residual_stages(
            STAGE_WIDTHS[0],
            tuple(width * widen_factor for width in STAGE_WIDTHS),
            (blocks_per_stage,) * 3,
            1,
            lambda channels, width, stride: wide_block(channels, width, stride, kernel_sizes, dropout_rate),
        )
        self.final_activation = bn_relu(channels)
        self.head = classifier_head(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.final_activation(self.blocks(self.stem(x))))


def wide_resnet(
    depth: int,
    widen_factor: int,
    *,
    block_type: tuple[int, ...] = (3, 3),
    deepening_factor: int | None = None,
    dropout_rate: float = 0.3,
    num_classes: int = 10,
    in_channels: int = 3,
) -> WideResNet:
    """A plain WRN-``depth``-``widen_factor`` with block type B(``block_type``) or l = ``deepening_factor``."""
    block_type = tuple(block_type)
    if deepening_factor is not None:
        if block_type != (3, 3):
            raise ValueError("give either block_type or deepening_factor, not both")
        if not isinstance(deepening_factor, int) or deepening_factor < 1:
            raise ValueError(f"deepening_factor must be a positive integer, got {deepening_factor!r}")
        block_type = (3,) * deepening_factor
    elif block_type not in BLOCK_TYPES:
        raise ValueError(f"unknown block type B{block_type}; choose one of {', '.join(f'B{t}' for t in BLOCK_TYPES)}")
    per_block = len(block_type)
    if (
        isinstance(depth, bool)
        or not isinstance(depth, int)
        or depth < 3 * per_block + 4
        or (depth - 4) % (3 * per_block)
    ):
        raise ValueError(
            f"Wide ResNet depth with {per_block} convolutions per block must be {3 * per_block}N + 4, got {depth!r}"
        )
    if not isinstance(widen_factor, int) or widen_factor < 1:
        raise ValueError(f"widen_factor must be a positive integer, got {widen_factor!r}")
    if not 0 <= dropout_rate < 1:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    return WideResNet((depth - 4) // (3 * per_block), widen_factor, block_type, dropout_rate, num_classes, in_channels)


@register_model(family="Wide ResNet", depth=16, parameters=10_961_370)
def wrn_16_8(**kwargs: object) -> nn.Module:
    """WRN-16-8, 11.0M parameters."""
    return wide_resnet(16, 8, **kwargs)


@register_model(family="Wide ResNet", depth=28, parameters=36_479_194)
def wrn_28_10(**kwargs: object) -> nn.Module:
    """WRN-28-10, 36.5M parameters."""
    return wide_resnet(28, 10, **kwargs)


@register_model(family="Wide ResNet", depth=40, parameters=8_949_210)
def wrn_40_4(**kwargs: object) -> nn.Module:
    """WRN-40-4, 8.9M parameters."""
    return wide_resnet(40, 4, **kwargs)
