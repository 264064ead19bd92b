"""ImageNet ResNet with bottleneck blocks (He et al. 2015, Table 1): torchvision's own classes.

A 7x7 stride-2 stem with 64 filters and a 3x3 stride-2 max pooling, 4 stages of bottleneck
blocks (1x1, 3x3, 1x1 with 64/128/256/512 bottleneck widths, 4x as many output channels),
global average pooling and a linear classifier; the stride sits on the 3x3 convolution and
the first block of each stage has a 1x1 projection shortcut with BatchNorm. This is exactly
torchvision's ``ResNet`` with ``Bottleneck`` blocks, so the family *is* torchvision's classes:
stochastic depth reaches them through the torchvision adapter (``depth/adapters/torchvision_blocks.py``), and
torchvision's pretrained weights load into the paper's ImageNet preset as they are. The
paper's ImageNet run uses the 152-layer network.

=================== ============== =========== =====================================
name                blocks         parameters  multiply-adds (224x224, 1000 classes)
=================== ============== =========== =====================================
imagenet_resnet50   3, 4, 6, 3     25.6M       4.1G
imagenet_resnet101  3, 4, 23, 3    44.5M       7.8G
imagenet_resnet152  3, 8, 36, 3    60.2M       11.5G
=================== ============== =========== =====================================
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet

from stochdepth.models.registry import register_model

STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def imagenet_resnet(depth: int, *, num_classes: int = 1000, in_channels: int = 3) -> resnet.ResNet:
    """A plain torchvision ResNet-50, -101 or -152 (random weights); ``in_channels`` other than 3 gets its own stem."""
    if depth not in STAGE_BLOCKS:
        raise ValueError(f"ImageNet ResNet depth must be one of {', '.join(map(str, STAGE_BLOCKS))}, got {depth!r}")
    network = resnet.ResNet(resnet.Bottleneck, list(STAGE_BLOCKS[depth]), num_classes=num_classes)
    if in_channels != 3:
        network.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(network.conv1.weight, mode="fan_out", nonlinearity="relu")
    return network


@register_model(family="ImageNet ResNet", depth=50, min_image_size=32, parameters=23_528_522)
def imagenet_resnet50(**kwargs: object) -> nn.Module:
    """ImageNet ResNet-50 (torchvision's resnet50), 25.6M parameters."""
    return imagenet_resnet(50, **kwargs)


@register_model(family="ImageNet ResNet", depth=101, min_image_size=32, parameters=42_520_650)
def imagenet_resnet101(**kwargs: object) -> nn.Module:
    """ImageNet ResNet-101 (torchvision's resnet101), 44.5M parameters."""
    return imagenet_resnet(101, **kwargs)


@register_model(family="ImageNet ResNet", depth=152, min_image_size=32, parameters=58_164_298)
def imagenet_resnet152(**kwargs: object) -> nn.Module:
    """ImageNet ResNet-152 (torchvision's resnet152), 60.2M parameters, 11.5G multiply-adds per 224x224 image."""
    return imagenet_resnet(152, **kwargs)
