"""timm's residual blocks: ResNet, ConvNeXt (V1, V2), Swin (V1, V2), ViT / DeiT and EVA, EfficientNet /
MobileNetV3, RegNet. Transformer blocks have two gated branches (attention, MLP), as DeiT and
DINOv2 drop them; each branch's own ``DropPath`` is not called by the converted block, its rate
becomes the branch's schedule."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from timm.models import (
    _efficientnet_blocks,
    convnext,
    eva,
    regnet,
    resnet,
    swin_transformer,
    swin_transformer_v2,
    vision_transformer,
)
from torch import nn

from stochdepth.depth.adapters import NormedTwoBranchBlock, SwappedBlock, parameters_outside
from stochdepth.depth.residual import stochastic_residual


def _refuse_squeeze_excitation(block: nn.Module) -> None:
    if getattr(block, "se", None) is not None:
        raise ValueError(
            f"cannot fold p_l into {type(block).__name__} with squeeze-excitation (it is not linear in the branch); "
            "keep the stochastic network in evaluation mode instead"
        )


class TimmResNetBlock(SwappedBlock):
    """``act(downsample(x) + branch(x))``. An identity shortcut carries the previous block's ReLU
    output: the (in-place) ReLU after the addition would leave it unchanged, so a dropped block
    returns it untouched (eq. 2)."""

    drop_paths = ("drop_path",)

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


class TimmTransformerBlock(NormedTwoBranchBlock):
    """timm's attention-and-MLP blocks: its own drop paths are ``drop_path1`` and ``drop_path2``."""

    drop_paths = ("drop_path1", "drop_path2")


def _mask_arguments(attn_mask: torch.Tensor | None, is_causal: bool) -> tuple[dict[str, object], dict[str, object]]:
    """The mask arguments as (per-row, shared), given only when set (attention modules of older timm take none).

    A 4-D mask (``[B, heads, N, N]``) has a row per sample, gathered with the surviving rows in
    sample and subset mode; a 2-D or 3-D one broadcasts over the batch.
    """
    if attn_mask is None and not is_causal:
        return {}, {}
    if attn_mask is not None and attn_mask.dim() == 4:
        return {"attn_mask": attn_mask}, {"is_causal": is_causal}
    return {}, {"attn_mask": attn_mask, "is_causal": is_causal}


class TimmVisionTransformerBlock(TimmTransformerBlock, vision_transformer.Block):
    """ViT and DeiT: pre-norm attention and MLP, each with an optional LayerScale."""

    plain_class = vision_transformer.Block
    branch_attributes = (("norm1", "attn", "ls1"), ("norm2", "mlp", "ls2"))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        per_row, shared = _mask_arguments(attn_mask, is_causal)
        return self.two_branches(x, per_row, **shared)

    def attention_branch(self, x: torch.Tensor, **options: object) -> torch.Tensor:
        return self.ls1(self.attn(self.norm1(x), **options))

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.ls2(self.mlp(self.norm2(x)))

    def branch_ends(self) -> list[nn.Module]:
        return [
            self.ls1 if isinstance(self.ls1, vision_transformer.LayerScale) else self.attn,
            self.ls2 if isinstance(self.ls2, vision_transformer.LayerScale) else self.mlp,
        ]


class TimmEvaBlock(TimmTransformerBlock, eva.EvaBlock):
    """EVA / EVA-02: pre-norm attention (with rotary embeddings) and MLP, optional ``gamma_1``/``gamma_2``."""

    plain_class = eva.EvaBlock
    branch_attributes = (("norm1", "attn", "gamma_1"), ("norm2", "mlp", "gamma_2"))

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        per_row, shared = _mask_arguments(attn_mask, is_causal)
        return self.two_branches(x, per_row, rope=rope, **shared)

    def attention_branch(self, x: torch.Tensor, **options: object) -> torch.Tensor:
        x = self.attn(self.norm1(x), **options)
        return x if self.gamma_1 is None else self.gamma_1 * x

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(self.norm2(x))
        return x if self.gamma_2 is None else self.gamma_2 * x

    def branch_ends(self) -> list[nn.Module | nn.Parameter]:
        return [
            self.attn.proj if self.gamma_1 is None else self.gamma_1,
            self.mlp if self.gamma_2 is None else self.gamma_2,
        ]


class TimmEvaBlockPostNorm(TimmTransformerBlock, eva.EvaBlockPostNorm):
    """EVA with the norm after attention and after the MLP."""

    plain_class = eva.EvaBlockPostNorm
    post_norm = True

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        per_row, shared = _mask_arguments(attn_mask, is_causal)
        return self.two_branches(x, per_row, rope=rope, **shared)


class TimmSwinBlock(TimmTransformerBlock):
    """Swin: windowed attention on (B, H, W, C), then the MLP on (B, H W, C); V1 normalises before each, V2 after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        x = stochastic_residual(x, x, self.attention_branch, self, 0).reshape(batch, -1, channels)
        return stochastic_residual(x, x, self.mlp_branch, self, 1).reshape(batch, height, width, channels)

    def attention(self, x: torch.Tensor, **options: object) -> torch.Tensor:
        return self._attn(x)


class TimmSwinBlockV1(TimmSwinBlock, swin_transformer.SwinTransformerBlock):
    plain_class = swin_transformer.SwinTransformerBlock


class TimmSwinBlockV2(TimmSwinBlock, swin_transformer_v2.SwinTransformerV2Block):
    plain_class = swin_transformer_v2.SwinTransformerV2Block
    post_norm = True


class TimmConvNeXtBlock(SwappedBlock, convnext.ConvNeXtBlock):
    """ConvNeXt V1 and V2: depthwise conv, norm, MLP, optional layer scale ``gamma``; shortcut may downsample."""

    plain_class = convnext.ConvNeXtBlock
    drop_paths = ("drop_path",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_residual(self.shortcut(x), x, self.branch, self, 0)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_dw(x)
        if self.use_conv_mlp:
            x = self.mlp(self.norm(x))
        else:
            x = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return x if self.gamma is None else x.mul(self.gamma.reshape(1, -1, 1, 1))

    def branch_parameters(self, which: int) -> Iterable[nn.Parameter]:
        return parameters_outside(self, self.shortcut)

    def branch_ends(self) -> list[nn.Module | nn.Parameter]:
        return [self.mlp if self.gamma is None else self.gamma]


class TimmEfficientNetBlock(SwappedBlock):
    """EfficientNet / MobileNetV3 blocks: ``input + branch(input)`` where the block ``has_skip``; others stay plain."""

    drop_paths = ("drop_path",)

    @classmethod
    def count_branches(cls, block: nn.Module) -> int:
        return 1 if block.has_skip else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_residual(x, x, self.branch, self, 0)

    def branch_parameters(self, which: int) -> Iterable[nn.Parameter]:
        return self.parameters()

    def last_norm(self) -> nn.Module:
        raise NotImplementedError

    def branch_ends(self) -> list[nn.Module]:
        norm = self.last_norm()
        if not isinstance(getattr(norm, "act", nn.Identity()), nn.Identity):
            raise ValueError(f"cannot fold p_l into {type(self).__name__}: its branch ends with an activation")
        return [norm]

    def space_to_depth(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.conv_s2d is None else self.bn_s2d(self.conv_s2d(x))


class TimmConvBnAct(TimmEfficientNetBlock, _efficientnet_blocks.ConvBnAct):
    plain_class = _efficientnet_blocks.ConvBnAct

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.aa(self.bn1(self.conv(x)))

    def last_norm(self) -> nn.Module:
        return self.bn1


class TimmDepthwiseSeparableConv(TimmEfficientNetBlock, _efficientnet_blocks.DepthwiseSeparableConv):
    plain_class = _efficientnet_blocks.DepthwiseSeparableConv

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.aa(self.bn1(self.conv_dw(self.space_to_depth(x)))))
        return self.bn2(self.conv_pw(x))

    def last_norm(self) -> nn.Module:
        return self.bn2


class TimmInvertedResidual(TimmEfficientNetBlock, _efficientnet_blocks.InvertedResidual):
    plain_class = _efficientnet_blocks.InvertedResidual

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv_pw(self.space_to_depth(x)))
        x = self.se(self.aa(self.bn2(self.conv_dw(x))))
        return self.bn3(self.conv_pwl(x))

    def last_norm(self) -> nn.Module:
        return self.bn3


class TimmEdgeResidual(TimmEfficientNetBlock, _efficientnet_blocks.EdgeResidual):
    plain_class = _efficientnet_blocks.EdgeResidual

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.aa(self.bn1(self.conv_exp(x))))
        return self.bn2(self.conv_pwl(x))

    def last_norm(self) -> nn.Module:
        return self.bn2


class TimmRegNetBottleneck(SwappedBlock, regnet.Bottleneck):
    """RegNet's ``act3(downsample(x) + branch(x))``; a block built without a shortcut stays plain."""

    plain_class = regnet.Bottleneck
    drop_paths = ("drop_path",)

    @classmethod
    def count_branches(cls, block: nn.Module) -> int:
        return 0 if block.downsample is None else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_residual(self.downsample(x), x, self.branch, self, 0, self.act3)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.se(self.conv2(self.conv1(x))))

    def branch_parameters(self, which: int) -> Iterable[nn.Parameter]:
        return parameters_outside(self, self.downsample)

    def branch_ends(self) -> list[nn.Module]:
        return [self.conv3]


ADAPTED = (
    TimmBasicBlock,
    TimmBottleneck,
    TimmVisionTransformerBlock,
    TimmEvaBlock,
    TimmEvaBlockPostNorm,
    TimmSwinBlockV1,
    TimmSwinBlockV2,
    TimmConvNeXtBlock,
    TimmConvBnAct,
    TimmDepthwiseSeparableConv,
    TimmInvertedResidual,
    TimmEdgeResidual,
    TimmRegNetBottleneck,
)
