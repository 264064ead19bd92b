"""Stochastic depth that really skips on the networks users already have: torchvision, timm and transformers.

Each adapter teaches the mechanism's discovery rule one block class of another library
(:func:`~stochdepth.register_residual_adapter`). A recognised block is made stochastic *in
place*: its class is swapped for a subclass whose ``forward`` computes the same residual sum
through :func:`~stochdepth.depth.residual.stochastic_residual` (a dropped branch is not run).
Its submodules stay where they are, so state-dict keys do not change: weights saved before
the conversion load after it and the other way round, and :func:`~stochdepth.fold_survival`
swaps the original class back. The classes are defined at module level, so a converted
network pickles (``torch.save`` of the whole module, ``torch.multiprocessing``).

Each subclass declares its ``plain_class``, its branch count (``branches``), what a branch
computes, which parameters only that branch uses, where its output scale sits for folding,
and the attribute names of its own drop-path layers (``drop_paths``, one per branch), whose
rates the conversion takes over. A subclass of a recognised class with a ``forward`` of its
own is not recognised (it computes something else). Recognised: torchvision's ResNet,
ConvNeXt, Swin (V1, V2), Vision Transformer and EfficientNet (V1, V2) blocks
(``torchvision_blocks``), and timm's ResNet, ConvNeXt (V1, V2), Swin (V1, V2), Vision
Transformer (ViT, DeiT), EVA, EfficientNet / MobileNetV3 and RegNet blocks (``timm_blocks``;
registered once timm has been imported, which it has if the network came from it), and Hugging
Face transformers' Llama-style decoder layers (Llama, Mistral, Qwen2, Qwen3) and GPT-2 blocks
(``transformers_blocks``; registered once transformers has been imported).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable

import torch
from torch import nn

from stochdepth.depth.gates import GateGenerator
from stochdepth.depth.residual import (
    BranchWithRowArguments,
    ResidualAdapter,
    StochasticModule,
    register_residual_adapter,
    scale_last_affine_layer,
    stochastic_residual,
)


class SwappedBlock(StochasticModule):
    """A library's block with its class swapped; ``folded`` swaps it back (p_l in the weights under paper scaling)."""

    plain_class: type[nn.Module]
    branches: int = 1
    drop_paths: tuple[str, ...] = ()
    branch_attributes: tuple[tuple[str, ...], ...] = ()
    """Per branch, the attributes (modules, or layer-scale parameters; ``None`` ones skipped) only it uses."""

    def branch_parameters(self, which: int) -> Iterable[nn.Parameter]:
        if not self.branch_attributes:
            raise NotImplementedError
        return parameters_of(*(getattr(self, name) for name in self.branch_attributes[which]))

    def extra_repr(self) -> str:
        probs = ", ".join(f"{prob:.4f}" for prob in self.survival_probs)
        return f"survival_probs=({probs}), drop_mode={self.gates.drop_mode}, scaling={self.gates.scaling}"

    def branch_ends(self) -> list[nn.Module | nn.Parameter | tuple[nn.Parameter, ...]]:
        """Per branch, where its output scale carries p_l when folding: a layer-scale parameter, a module,
        or the parameters of its last linear layer."""
        raise NotImplementedError

    def folded(self) -> nn.Module:
        if self.gates.scaling == "paper":
            for prob, end in zip(self.probs_in_force(), self.branch_ends()):
                if prob < 1.0:
                    _scale_output(end, prob)
        return self._swap_back()

    def _swap_back(self) -> nn.Module:
        for name in ("survival_probs", "first_index", "gates"):
            self.__dict__.pop(name, None)
        self.__class__ = self.plain_class
        return self

    @classmethod
    def count_branches(cls, block: nn.Module) -> int:
        """How many residual branches ``block`` holds (0: not residual, left plain)."""
        return cls.branches

    @classmethod
    def recognised_branches(cls, block: nn.Module) -> int:
        """``count_branches``, or 0 for a subclass that computes its own ``forward``."""
        return cls.count_branches(block) if type(block).forward is cls.plain_class.forward else 0

    @classmethod
    def native_drop_paths(cls, block: nn.Module) -> list[nn.Module | None]:
        """Per branch, the block's own drop-path layer ([] for a subclass with its own ``forward``)."""
        if type(block).forward is not cls.plain_class.forward:
            return []
        return [getattr(block, name, None) for name in cls.drop_paths]

    @classmethod
    def adapter(cls) -> ResidualAdapter:
        return ResidualAdapter(
            num_branches=cls.recognised_branches, make_stochastic=cls.swap_in, native_drop_paths=cls.native_drop_paths
        )

    @classmethod
    def swap_in(cls, block: nn.Module, probs: list[float], first: int, gates: GateGenerator) -> nn.Module:
        block.__class__ = cls
        block.survival_probs = tuple(probs)
        block.first_index = first
        block.gates = gates
        return block


class NormedTwoBranchBlock(SwappedBlock):
    """Attention then MLP, each a gated branch, normalised before each (``norm1``, ``norm2``) or, with
    ``post_norm``, after: Swin (V1, V2) in both libraries, timm's ViT and EVA blocks."""

    branches = 2
    post_norm = False
    branch_attributes = (("norm1", "attn"), ("norm2", "mlp"))

    def attention(self, x: torch.Tensor, **options: object) -> torch.Tensor:
        return self.attn(x, **options)

    def attention_branch(self, x: torch.Tensor, **options: object) -> torch.Tensor:
        if self.post_norm:
            return self.norm1(self.attention(x, **options))
        return self.attention(self.norm1(x), **options)

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.mlp(x)) if self.post_norm else self.mlp(self.norm2(x))

    def two_branches(
        self, x: torch.Tensor, per_row: dict[str, object] | None = None, **options: object
    ) -> torch.Tensor:
        """``x + attention(x)``, then ``+ mlp(...)``; ``per_row`` and ``options`` go to the attention.

        ``per_row`` holds the arguments with one entry per sample (an attention mask's rows, position
        embeddings), gathered with the surviving rows in sample and subset mode; ``options`` are shared.
        """
        attention = self.attention_branch
        if per_row or options:
            attention = BranchWithRowArguments(self.attention_branch, per_row or {}, options)
        x = stochastic_residual(x, x, attention, self, 0)
        return stochastic_residual(x, x, self.mlp_branch, self, 1)

    def branch_ends(self) -> list[nn.Module | nn.Parameter]:
        return [self.norm1, self.norm2] if self.post_norm else [self.attn.proj, self.mlp]


def parameters_of(*owners: nn.Module | nn.Parameter | None) -> list[nn.Parameter]:
    """The parameters of ``owners``: a module's, or a parameter itself; ``None`` (an absent layer scale) adds none."""
    found = []
    for owner in owners:
        if isinstance(owner, nn.Parameter):
            found.append(owner)
        elif isinstance(owner, nn.Module):
            found.extend(owner.parameters())
    return found


def parameters_outside(block: nn.Module, *excluded: nn.Module | None) -> Iterable[nn.Parameter]:
    """``block``'s parameters that do not belong to ``excluded`` modules (its shortcut, say)."""
    left_out = {id(param) for module in excluded if module is not None for param in module.parameters()}
    return [param for param in block.parameters() if id(param) not in left_out]


def _scale_output(end: nn.Module | nn.Parameter | tuple[nn.Parameter, ...], scale: float) -> None:
    """Multiply a branch's output by ``scale`` through its weights: a layer-scale parameter, a
    LayerScale module's gamma, the last affine layer of ``end``, or each of a tuple of parameters
    (the weight and bias of a layer PyTorch does not know, like GPT-2's ``Conv1D``)."""
    if isinstance(end, tuple):
        with torch.no_grad():
            for param in end:
                param.mul_(scale)
        return
    gamma = end if isinstance(end, nn.Parameter) else getattr(end, "gamma", None)
    if isinstance(gamma, nn.Parameter):
        with torch.no_grad():
            gamma.mul_(scale)
        return
    scale_last_affine_layer(end, scale)


_RATE_ATTRIBUTES = {"DropPath": "drop_prob", "StochasticDepth": "p"}
"""Where timm's ``DropPath`` and torchvision's ``StochasticDepth`` keep their rate."""


def native_drop_rate(module: nn.Module | None) -> float:
    """The rate of a library's own drop-path layer (timm's ``DropPath``, torchvision's ``StochasticDepth``); else 0.

    A rate outside [0, 1) (a network built with ``stochastic_depth_prob=-0.5``) is a ``ValueError``.
    """
    rate = getattr(module, _RATE_ATTRIBUTES.get(type(module).__name__, ""), 0.0)
    if not isinstance(rate, (int, float)) or isinstance(rate, bool):
        return 0.0
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{type(module).__name__} has a drop rate of {rate!r}; a drop rate must be in [0, 1)")
    return float(rate)


def without_native_drop_path(network: nn.Module) -> nn.Module:
    """``network`` with the rate of every own drop-path layer set to 0, so that a schedule of ours replaces it."""
    for module in network.modules():
        if native_drop_rate(module) > 0:
            setattr(module, _RATE_ATTRIBUTES[type(module).__name__], 0.0)
    return network


_LIBRARIES = {
    "torchvision": "stochdepth.depth.adapters.torchvision_blocks",
    "timm": "stochdepth.depth.adapters.timm_blocks",
    "transformers": "stochdepth.depth.adapters.transformers_blocks",
}
_IMPORTED_FIRST = ("timm", "transformers")
"""Libraries whose adapters are registered once the user has imported the library (the network came from it)."""
_REGISTERED: set[str] = set()


def register_adapters() -> None:
    """Register the torchvision adapters, and timm's and transformers' once imported (idempotent)."""
    for library, module_name in _LIBRARIES.items():
        if library in _REGISTERED or (library in _IMPORTED_FIRST and library not in sys.modules):
            continue
        _REGISTERED.add(library)
        for stochastic in importlib.import_module(module_name).ADAPTED:
            register_residual_adapter(stochastic.plain_class, stochastic.adapter())
