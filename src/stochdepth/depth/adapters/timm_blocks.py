"""timm's ResNet blocks and Vision Transformer ``Block`` (two gated branches, as DeiT and DINOv2 drop them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from timm.models import resnet, vision_transformer
from torch import nn

from stochdepth.depth.adapters import SwappedBlock, parameters_outside
from stochdepth.depth.residual import stochastic_residual


def _refuse_squeeze_excitation(block: nn.Module) -> None:
    if getattr(block, "se", None) is not None:
        raise ValueError(
            f"cannot fold p_l into {type(block).__name__} with squeeze-excitation (it is not linear in the branch); "
            "keep the stochastic network in evaluation mode instead"
        )


class TimmResNetBlock(SwappedBlock):
    """An identity shortcut carries the previous block's ReLU output: the (in-place) ReLU after the
    addition would leave it unchanged, so a dropped block returns it untouched (eq. 2)."""

    def residual(self, x: torch.Tensor, post: nn.Module) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return stochastic_residual(
            shortcut, x, self.branch, self, 0, post, dropped_returns_shortcut=self.downsample is None
        )

    def branch_parameters(self, which: int) -> Iterable[nn.Parameter]:
        return parameters_outside(self, self.downsample)


class TimmBasicBlock(TimmResNetBlock, resnet.BasicBlock):
    plain_class = resnet.BasicBlock

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x, self.act2)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        x = self.bn2(self.conv2(x))
        return x if self.se is None else self.se(x)

    def branch_ends(self) -> list[nn.Module]:
        _refuse_squeeze_excitation(self)
        return [self.bn2]


class TimmBottleneck(TimmResNetBlock, resnet.Bottleneck):
    plain_class = resnet.Bottleneck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x, self.act3)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(x)))))
        x = self.bn3(self.conv3(x))
        return x if self.se is None else self.se(x)

    def branch_ends(self) -> list[nn.Module]:
        _refuse_squeeze_excitation(self)
        return [self.bn3]


class TimmVisionTransformerBlock(SwappedBlock, vision_transformer.Block):
    """Attention and MLP, each a residual branch with its own gate (DeiT, DINOv2)."""

    plain_class = vision_transformer.Block
    branches = 2

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        options = {}
        if attn_mask is not None or is_causal:
            options = {"attn_mask": attn_mask, "is_causal": is_causal}
            if self.training and self.gates.drop_mode == "sample":
                raise ValueError("sample mode cannot subset an attention mask; use drop_mode='batch'")
        attention: Callable[[torch.Tensor], torch.Tensor] = lambda y: self.ls1(self.attn(self.norm1(y), **options))  # noqa: E731
        x = stochastic_residual(x, x, attention, self, 0)
        return stochastic_residual(x, x, self.mlp_branch, self, 1)

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.ls2(self.mlp(self.norm2(x)))

    def branch_parameters(self, which: int) -> Iterable[nn.Parameter]:
        modules = (self.norm1, self.attn, self.ls1) if which == 0 else (self.norm2, self.mlp, self.ls2)
        return [param for module in modules for param in module.parameters()]

    def branch_ends(self) -> list[nn.Module]:
        return [
            self.ls1 if isinstance(self.ls1, vision_transformer.LayerScale) else self.attn,
            self.ls2 if isinstance(self.ls2, vision_transformer.LayerScale) else self.mlp,
        ]


ADAPTED = (TimmBasicBlock, TimmBottleneck, TimmVisionTransformerBlock)
