"""Stochastic depth that really skips on the networks users already have: torchvision and timm.

Each adapter teaches the mechanism's discovery rule one block class of another library
(:func:`stochdepth.depth.register_residual_adapter`). A recognised block is made stochastic
*in place*: its class is swapped for a subclass whose ``forward`` computes the same residual
sum through :func:`stochdepth.depth.stochastic_residual` (a dropped branch is not run). Its
submodules stay where they are, so state-dict keys do not change: weights saved before the
conversion load after it and the other way round, and :func:`stochdepth.fold_survival` swaps
the original class back (p_l folded into the branch's last scale), so the folded network's
``state_dict`` loads into the library's own class.

Recognised: torchvision's ``BasicBlock`` and ``Bottleneck`` (resnet18 to resnet152,
wide_resnet50_2/101_2, resnext) and timm's ResNet ``BasicBlock``/``Bottleneck`` and Vision
Transformer ``Block`` (two residual branches, attention and MLP, each gated on its own, as
DeiT and DINOv2 apply stochastic depth). timm is optional: its adapters are registered only
once timm has been imported (it has, if the network came from it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn

from stochdepth.depth import (
    GateGenerator,
    ResidualAdapter,
    StochasticModule,
    register_residual_adapter,
    scale_last_affine_layer,
    stochastic_residual,
)

_REGISTERED: set[str] = set()


def _swap_in(block: nn.Module, stochastic_class: type, probs: list[float], first: int, gates: GateGenerator):
    block.__class__ = stochastic_class
    block.survival_probs = tuple(probs)
    block.first_index = first
    block.gates = gates
    return block


class _SwappedBlock(StochasticModule):
    """A library's block with its class swapped; ``folded`` swaps it back with p_l in the weights."""

    plain_class: type[nn.Module]

    def extra_repr(self) -> str:
        probs = ", ".join(f"{prob:.4f}" for prob in self.survival_probs)
        return f"survival_probs=({probs}), drop_mode={self.gates.drop_mode}, scaling={self.gates.scaling}"

    def branch_ends(self) -> list[nn.Module]:
        """Per branch, the module whose output scale carries p_l when folding."""
        raise NotImplementedError

    def folded(self) -> nn.Module:
        if self.gates.scaling == "paper":
            for prob, end in zip(self.survival_probs, self.branch_ends()):
                if prob < 1.0:
                    _scale_output(end, prob)
        for name in ("survival_probs", "first_index", "gates"):
            self.__dict__.pop(name, None)
        self.__class__ = self.plain_class
        return self


def _scale_output(module: nn.Module, scale: float) -> None:
    """Multiply ``module``'s output by ``scale`` through its weights (a LayerScale's gamma or the last affine layer)."""
    gamma = getattr(module, "gamma", None)
    if isinstance(gamma, nn.Parameter):
        with torch.no_grad():
            gamma.mul_(scale)
        return
    scale_last_affine_layer(module, scale)


def _refuse_squeeze_excitation(block: nn.Module) -> None:
    if getattr(block, "se", None) is not None:
        raise ValueError(
            f"cannot fold p_l into {type(block).__name__} with squeeze-excitation (it is not linear in the branch); "
            "keep the stochastic network in evaluation mode instead"
        )


def _adapter(stochastic_class: type[_SwappedBlock], branches: int) -> ResidualAdapter:
    return ResidualAdapter(
        num_branches=lambda block: branches,
        make_stochastic=lambda block, probs, first, gates: _swap_in(block, stochastic_class, probs, first, gates),
    )


def _torchvision_classes() -> list[tuple[type, type]]:
    from torchvision.models import resnet

    class TorchvisionBlock(_SwappedBlock):
        """torchvision's blocks: ``relu(downsample(x) + branch(x))``; an identity shortcut carries a ReLU output."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shortcut = x if self.downsample is None else self.downsample(x)
            return stochastic_residual(
                shortcut, x, self._branch, self, 0, self.relu, dropped_returns_shortcut=self.downsample is None
            )

    class TorchvisionBasicBlock(TorchvisionBlock, resnet.BasicBlock):
        plain_class = resnet.BasicBlock

        def _branch(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

        def branch_ends(self) -> list[nn.Module]:
            return [self.bn2]

    class TorchvisionBottleneck(TorchvisionBlock, resnet.Bottleneck):
        plain_class = resnet.Bottleneck

        def _branch(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.relu(self.bn2(self.conv2(x)))
            return self.bn3(self.conv3(x))

        def branch_ends(self) -> list[nn.Module]:
            return [self.bn3]

    return [(resnet.BasicBlock, TorchvisionBasicBlock), (resnet.Bottleneck, TorchvisionBottleneck)]


def _timm_classes() -> list[tuple[type, type]]:
    from timm.models import resnet, vision_transformer

    def timm_residual(block: nn.Module, x: torch.Tensor, branch: Callable, post: nn.Module) -> torch.Tensor:
        # An identity shortcut carries the previous block's ReLU output: the (in-place) ReLU after
        # the addition would leave it unchanged, so a dropped block returns it untouched (eq. 2).
        shortcut = x if block.downsample is None else block.downsample(x)
        return stochastic_residual(
            shortcut, x, branch, block, 0, post, dropped_returns_shortcut=block.downsample is None
        )

    class TimmBasicBlock(_SwappedBlock, resnet.BasicBlock):
        plain_class = resnet.BasicBlock

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return timm_residual(self, x, self._branch, self.act2)

        def _branch(self, x: torch.Tensor) -> torch.Tensor:
            x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
            x = self.bn2(self.conv2(x))
            return x if self.se is None else self.se(x)

        def branch_ends(self) -> list[nn.Module]:
            _refuse_squeeze_excitation(self)
            return [self.bn2]

    class TimmBottleneck(_SwappedBlock, resnet.Bottleneck):
        plain_class = resnet.Bottleneck

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return timm_residual(self, x, self._branch, self.act3)

        def _branch(self, x: torch.Tensor) -> torch.Tensor:
            x = self.act1(self.bn1(self.conv1(x)))
            x = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(x)))))
            x = self.bn3(self.conv3(x))
            return x if self.se is None else self.se(x)

        def branch_ends(self) -> list[nn.Module]:
            _refuse_squeeze_excitation(self)
            return [self.bn3]

    class TimmVisionTransformerBlock(_SwappedBlock, vision_transformer.Block):
        """Attention and MLP, each a residual branch with its own gate (DeiT, DINOv2)."""

        plain_class = vision_transformer.Block

        def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
            if attn_mask is not None or is_causal:
                options = {"attn_mask": attn_mask, "is_causal": is_causal}
                if self.training and self.gates.drop_mode == "sample":
                    raise ValueError("sample mode cannot subset an attention mask; use drop_mode='batch'")
            else:
                options = {}

            def attention(y: torch.Tensor) -> torch.Tensor:
                return self.ls1(self.attn(self.norm1(y), **options))

            x = stochastic_residual(x, x, attention, self, 0)
            return stochastic_residual(x, x, lambda y: self.ls2(self.mlp(self.norm2(y))), self, 1)

        def branch_ends(self) -> list[nn.Module]:
            return [
                self.ls1 if isinstance(self.ls1, vision_transformer.LayerScale) else self.attn,
                self.ls2 if isinstance(self.ls2, vision_transformer.LayerScale) else self.mlp,
            ]

    return [
        (resnet.BasicBlock, TimmBasicBlock),
        (resnet.Bottleneck, TimmBottleneck),
        (vision_transformer.Block, TimmVisionTransformerBlock),
    ]


def register_adapters() -> None:
    """Register the torchvision adapters, and timm's once timm is imported (idempotent)."""
    libraries = {"torchvision": _torchvision_classes, "timm": _timm_classes}
    for library, classes in libraries.items():
        if library in _REGISTERED or (library == "timm" and "timm" not in sys.modules):
            continue
        _REGISTERED.add(library)
        for plain, stochastic in classes():
            branches = 2 if plain.__name__ == "Block" else 1
            register_residual_adapter(plain, _adapter(stochastic, branches))
