"""DenseNet-BC (Huang et al., "Densely Connected Convolutional Networks", CVPR 2017), for comparison.

The CIFAR network: a 3x3 stem with 2k filters, 3 dense blocks of n bottleneck layers
(BN-ReLU-1x1 to 4k channels, BN-ReLU-3x3 to k channels, concatenated to the input; k is the
growth rate) joined by transitions (BN-ReLU-1x1 halving the channels, 2x2 average pooling),
then BN-ReLU, global average pooling and a linear classifier; depth L = 6n + 4.

Dense blocks have no residual branches, so stochastic depth does not apply: the registry
marks the family ``residual=False``, its survival rule is always "none", ``survival_probs``
is empty, and asking for another rule is an error.

==================== ====== ===========
name                 k      parameters
==================== ====== ===========
densenet_bc_100_12   12     0.8M
densenet_bc_250_24   24     15.3M
densenet_bc_190_40   40     25.6M
==================== ====== ===========
"""

from __future__ import annotations

import torch
from torch import nn

from stochdepth.models.layers import bn_relu, classifier_head, conv1x1, conv3x3, init_weights
from stochdepth.models.registry import register_model

COMPRESSION = 0.5
BOTTLENECK_FACTOR = 4


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 (4k), BN-ReLU-3x3 (k); the output is the input with k new channels appended."""

    def __init__(self, in_channels: int, growth_rate: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            bn_relu(in_channels),
            conv1x1(in_channels, BOTTLENECK_FACTOR * growth_rate),
            bn_relu(BOTTLENECK_FACTOR * growth_rate),
            conv3x3(BOTTLENECK_FACTOR * growth_rate, growth_rate),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layers(x)], dim=1)


def transition(in_channels: int, out_channels: int) -> nn.Sequential:
    """BN-ReLU-1x1 compression, then 2x2 average pooling."""
    return nn.Sequential(bn_relu(in_channels), conv1x1(in_channels, out_channels), nn.AvgPool2d(2))


class DenseNetBC(nn.Module):
    """Stem, three dense blocks with transitions, BN-ReLU, head."""

    def __init__(self, layers_per_block: int, growth_rate: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        channels = 2 * growth_rate
        self.stem = nn.Sequential(conv3x3(in_channels, channels))
        stages: list[nn.Module] = []
        for block in range(3):
            for _ in range(layers_per_block):
                stages.append(DenseLayer(channels, growth_rate))
                channels += growth_rate
            if block < 2:
                compressed = int(channels * COMPRESSION)
                stages.append(transition(channels, compressed))
                channels = compressed
        self.features = nn.Sequential(*stages)
        self.final_activation = bn_relu(channels)
        self.head = classifier_head(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.final_activation(self.features(self.stem(x))))


def densenet_bc(
    depth: int,
    growth_rate: int,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
) -> DenseNetBC:
    """DenseNet-BC-``depth`` with growth rate ``growth_rate``; depth = 6n + 4."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ValueError(f"DenseNet-BC depth must be 6n + 4 with n >= 1 (100, 190, 250, ...), got {depth!r}")
    return DenseNetBC((depth - 4) // 6, growth_rate, num_classes, in_channels)


@register_model(family="DenseNet-BC", depth=100, residual=False, parameters=769_162)
def densenet_bc_100_12(**kwargs: object) -> nn.Module:
    """DenseNet-BC-100, k = 12, 0.8M parameters."""
    return densenet_bc(100, 12, **kwargs)


@register_model(family="DenseNet-BC", depth=250, residual=False, parameters=15_324_406)
def densenet_bc_250_24(**kwargs: object) -> nn.Module:
    """DenseNet-BC-250, k = 24, 15.3M parameters."""
    return densenet_bc(250, 24, **kwargs)


@register_model(family="DenseNet-BC", depth=190, residual=False, parameters=25_624_430)
def densenet_bc_190_40(**kwargs: object) -> nn.Module:
    """DenseNet-BC-190, k = 40, 25.6M parameters."""
    return densenet_bc(190, 40, **kwargs)
