"""torchvision's residual blocks.

ResNets (resnet18 to resnet152, wide_resnet50_2/101_2, resnext: ``BasicBlock``, ``Bottleneck``),
ConvNeXt (``CNBlock``: the branch ends with its layer scale), Swin and Swin V2
(``SwinTransformerBlock``/``SwinTransformerBlockV2``: attention and MLP, two branches), the
Vision Transformer (``EncoderBlock``: attention with its dropout, and MLP, two branches),
MaxViT (its ``MBConv`` with a projection shortcut, and each ``PartitionAttentionLayer``'s
attention and MLP on the partitioned map, two branches) and EfficientNet / EfficientNet V2
(``MBConv``/``FusedMBConv`` with a skip connection; a block without one is not residual and
stays plain). Each network's own ``StochasticDepth`` (a mask
multiply) is not called by the converted block; its rate becomes the branch's schedule.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torchvision.models import convnext, efficientnet, maxvit, resnet, swin_transformer, vision_transformer

from stochdepth.depth.adapters import NormedTwoBranchBlock, SwappedBlock, parameters_outside
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


class TorchvisionConvNeXtBlock(SwappedBlock, convnext.CNBlock):
    """``input + layer_scale * block(input)``; p_l folds into the layer scale."""

    plain_class = convnext.CNBlock
    drop_paths = ("stochastic_depth",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_residual(x, x, self.branch, self, 0)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_scale * self.block(x)

    def branch_parameters(self, which: int) -> Iterable[nn.Parameter]:
        return self.parameters()

    def branch_ends(self) -> list[nn.Module | nn.Parameter]:
        return [self.layer_scale]


class TorchvisionSwinBlock(NormedTwoBranchBlock):
    """Attention and MLP, each a gated branch; V1 normalises before each, V2 after."""

    drop_paths = ("stochastic_depth", "stochastic_depth")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.two_branches(x)


class TorchvisionSwinBlockV1(TorchvisionSwinBlock, swin_transformer.SwinTransformerBlock):
    plain_class = swin_transformer.SwinTransformerBlock


class TorchvisionSwinBlockV2(TorchvisionSwinBlock, swin_transformer.SwinTransformerBlockV2):
    plain_class = swin_transformer.SwinTransformerBlockV2
    post_norm = True


class TorchvisionEncoderBlock(SwappedBlock, vision_transformer.EncoderBlock):
    """The Vision Transformer's block: attention (with its dropout) and MLP, two gated branches."""

    plain_class = vision_transformer.EncoderBlock
    branches = 2
    branch_attributes = (("ln_1", "self_attention"), ("ln_2", "mlp"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = stochastic_residual(x, x, self.attention_branch, self, 0)
        return stochastic_residual(x, x, self.mlp_branch, self, 1)

    def attention_branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(x)
        return self.dropout(self.self_attention(x, x, x, need_weights=False)[0])

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ln_2(x))

    def branch_ends(self) -> list[nn.Module]:
        return [self.self_attention.out_proj, self.mlp]


class TorchvisionInvertedResidual(SwappedBlock):
    """EfficientNet's ``MBConv`` / ``FusedMBConv``: ``input + block(input)`` where the block has a skip."""

    drop_paths = ("stochastic_depth",)

    @classmethod
    def count_branches(cls, block: nn.Module) -> int:
        return 1 if block.use_res_connect else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_residual(x, x, self.block, self, 0)

    def branch_parameters(self, which: int) -> Iterable[nn.Parameter]:
        return self.block.parameters()

    def branch_ends(self) -> list[nn.Module]:
        return [self.block]


class TorchvisionMBConv(TorchvisionInvertedResidual, efficientnet.MBConv):
    plain_class = efficientnet.MBConv


class TorchvisionFusedMBConv(TorchvisionInvertedResidual, efficientnet.FusedMBConv):
    plain_class = efficientnet.FusedMBConv


class TorchvisionMaxVitMBConv(SwappedBlock, maxvit.MBConv):
    """MaxViT's ``proj(x) + layers(x)`` (the projection pools and widens where the block downsamples)."""

    plain_class = maxvit.MBConv
    drop_paths = ("stochastic_depth",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_residual(self.proj(x), x, self.layers, self, 0)

    def branch_parameters(self, which: int) -> Iterable[nn.Parameter]:
        return parameters_outside(self, self.proj)

    def branch_ends(self) -> list[nn.Module]:
        return [self.layers.conv_c]


class TorchvisionPartitionAttention(SwappedBlock, maxvit.PartitionAttentionLayer):
    """MaxViT's block or grid attention: the map is partitioned, then attention and MLP are two gated branches."""

    plain_class = maxvit.PartitionAttentionLayer
    branches = 2
    branch_attributes = (("attn_layer",), ("mlp_layer",))
    drop_paths = ("stochastic_dropout", "stochastic_dropout")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, columns = self.grid_size[0] // self.p, self.grid_size[1] // self.p
        torch._assert(
            self.grid_size[0] % self.p == 0 and self.grid_size[1] % self.p == 0,
            f"grid size {self.grid_size} is not divisible by the partition size {self.p}",
        )
        x = self.partition_swap(self.partition_op(x, self.p))
        x = stochastic_residual(x, x, self.attn_layer, self, 0)
        x = stochastic_residual(x, x, self.mlp_layer, self, 1)
        return self.departition_op(self.departition_swap(x), self.p, rows, columns)

    def branch_ends(self) -> list[nn.Module]:
        return [self.attn_layer, self.mlp_layer]


ADAPTED = (
    TorchvisionBasicBlock,
    TorchvisionBottleneck,
    TorchvisionConvNeXtBlock,
    TorchvisionSwinBlockV1,
    TorchvisionSwinBlockV2,
    TorchvisionEncoderBlock,
    TorchvisionMBConv,
    TorchvisionFusedMBConv,
    TorchvisionMaxVitMBConv,
    TorchvisionPartitionAttention,
)
