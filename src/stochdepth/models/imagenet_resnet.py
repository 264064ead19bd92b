"""ImageNet ResNet with bottleneck blocks (He et al. 2015, Table 1), in torchvision's layout.

A 7x7 stride-2 stem with 64 filters and a 3x3 stride-2 max pooling, 4 stages of bottleneck
blocks (1x1, 3x3, 1x1 with 64/128/256/512 bottleneck widths, 4x as many output channels),
global average pooling and a linear classifier. Every block's branch ends with a BatchNorm;
the first block of each stage has a 1x1 projection shortcut with BatchNorm (the stride
sits on the 3x3 convolution, as in torchvision); ReLU after the addition. The paper's
ImageNet run uses the 152-layer network.

=================== ============== =========== =====================================
name                blocks         parameters  multiply-adds (224x224, 1000 classes)
=================== ============== =========== =====================================
imagenet_resnet50   3, 4, 6, 3     25.6M       4.1G
imagenet_resnet101  3, 4, 23, 3    44.5M       7.8G
imagenet_resnet152  3, 8, 36, 3    60.2M       11.5G
=================== ============== =========== =====================================
"""

from __future__ import annotations

import torch
from torch import nn

from stochdepth.depth import ResidualBlock
from stochdepth.models.layers import classifier_head, conv1x1, conv3x3, init_weights, residual_stages
from stochdepth.models.registry import register_model

STAGE_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def bottleneck(in_channels: int, width: int, stride: int) -> ResidualBlock:
    """1x1-BN-ReLU, 3x3 (stride)-BN-ReLU, 1x1-BN; projection shortcut when the shape changes."""
    out_channels = width * EXPANSION
    branch = nn.Sequential(
        conv1x1(in_channels, width),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        conv3x3(width, width, stride),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        conv1x1(width, out_channels),
        nn.BatchNorm2d(out_channels),
    )
    if stride != 1 or in_channels != out_channels:
        shortcut = nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
        return ResidualBlock(branch, shortcut, post_activation=nn.ReLU())
    return ResidualBlock(branch, post_activation=nn.ReLU(), dropped_returns_shortcut=True)


class ImageNetResNet(nn.Module):
    """Stem, bottleneck stages, head."""

    def __init__(self, stage_blocks: tuple[int, ...], num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.blocks, channels = residual_stages(64, STAGE_WIDTHS, stage_blocks, EXPANSION, bottleneck)
        self.head = classifier_head(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def imagenet_resnet(depth: int, *, num_classes: int = 1000, in_channels: int = 3) -> ImageNetResNet:
    """A plain ImageNet ResNet-50, -101 or -152."""
    if depth not in STAGE_BLOCKS:
        raise ValueError(f"ImageNet ResNet depth must be one of {', '.join(map(str, STAGE_BLOCKS))}, got {depth!r}")
    return ImageNetResNet(STAGE_BLOCKS[depth], num_classes, in_channels)


@register_model(family="ImageNet ResNet", depth=50, min_image_size=32)
def imagenet_resnet50(**kwargs: object) -> nn.Module:
    """ImageNet ResNet-50, 25.6M parameters."""
    return imagenet_resnet(50, **kwargs)


@register_model(family="ImageNet ResNet", depth=101, min_image_size=32)
def imagenet_resnet101(**kwargs: object) -> nn.Module:
    """ImageNet ResNet-101, 44.5M parameters."""
    return imagenet_resnet(101, **kwargs)


@register_model(family="ImageNet ResNet", depth=152, min_image_size=32)
def imagenet_resnet152(**kwargs: object) -> nn.Module:
    """ImageNet ResNet-152, 60.2M parameters, 11.5G multiply-adds per 224x224 image."""
    return imagenet_resnet(152, **kwargs)
