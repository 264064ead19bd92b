"""The residual sum of a stochastic block: skip, scale, and exact zero gradients for what was skipped.

Huang et al. 2016, section 3. Training, ``drop_mode="batch"`` (the paper): one Bernoulli gate
per residual branch per step; a dropped branch is *not executed*, forward or backward, which
is where the training-time saving comes from. Where the block declares that its
post-addition activation leaves the shortcut unchanged (a ReLU after a parameter-free
shortcut of a ReLU output), a dropped block returns the shortcut itself, H_l = id(H_{l-1})
as in eq. 2, and keeps no activation for backward. ``drop_mode="sample"``: the branch runs
on the surviving rows only (gathered, then added back), so compute and saved activations
fall with the survival probability; the gathered rows themselves are not kept for backward
(they are gathered again from the block input, which is kept anyway). ``drop_mode="subset"``:
the same on a fixed number of rows, round(p_l B) (DINOv2's way): shapes never change.

Scaling, ``"paper"``: no rescaling in training; in evaluation each branch is multiplied by
p_l (eq. 5), which :func:`~stochdepth.fold_survival` bakes into the weights. ``"inverted"``
(timm's ``drop_path``, torchvision's ``StochasticDepth``, so their pretrained weights): in
training a surviving branch is divided by p_l (batch and sample mode) or by the share of the
batch it ran on (subset mode); evaluation runs the plain branch. The scale is the ``alpha`` of the
residual addition, so it costs no extra tensor.

A dropped branch's parameters get an *exact zero gradient* in backward (not none): PyTorch's
DDP with its default settings waits for every parameter's gradient, and SGD applies weight
decay and momentum only to parameters with a gradient, as the paper's code did to dropped
blocks. The block's output passes through a small autograd function that takes the
parameters as inputs and gives them zeros in backward; the output is a view of the shortcut,
so no activation is copied.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from stochdepth.depth.gates import GateGenerator

AFFINE_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.modules.conv._ConvNd, nn.Linear, nn.LayerNorm)


def training_scale(scaling: str, drop_mode: str, survival_prob: float, rows: int, batch_size: int) -> float:
    """The factor on a branch that ran on ``rows`` of ``batch_size`` samples in a training step.

    ``"paper"``: 1 (section 3: no rescaling in training). ``"inverted"``: 1 / p_l in batch and
    sample mode (each sample's branch runs with probability exactly p_l, so the expected
    output is the plain block's, as timm's ``drop_path`` and torchvision's ``StochasticDepth``
    make it); in subset mode ``batch_size / rows``, the inverse of the share of the batch that
    ran (fixed, so exact).
    """
    if scaling == "paper":
        return 1.0
    if drop_mode == "subset":
        return batch_size / rows
    return 1.0 / survival_prob


class _ZeroGradientsThrough(torch.autograd.Function):
    """``output`` unchanged (returned as a view), with ``parameters`` as inputs whose gradient is zero.

    The parameters become edges of the autograd graph, so their gradient accumulators run in
    backward like any other's: DDP's reducer counts them as ready whether or not it searches
    the graph (``find_unused_parameters``), and activation checkpointing recomputes them.
    """

    @staticmethod
    def forward(ctx, output: torch.Tensor, *parameters: torch.Tensor) -> torch.Tensor:
        ctx.shapes = [(param.shape, param.dtype, param.device) for param in parameters]
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        zeros = [torch.zeros(shape, dtype=dtype, device=device) for shape, dtype, device in ctx.shapes]
        return (grad if ctx.needs_input_grad[0] else None, *zeros)


@torch.compiler.disable
def give_zero_gradients(output: torch.Tensor, parameters: Iterable[nn.Parameter]) -> torch.Tensor:
    """``output``, as a view through which backward gives ``parameters`` an exact zero gradient.

    PyTorch forbids modifying such a view in place: the output of a dropped block must not be
    changed in place by what follows it (no block of torchvision, timm or this library does).
    """
    trainable = [param for param in parameters if param.requires_grad]
    if not trainable or not torch.is_grad_enabled():
        return output
    return _ZeroGradientsThrough.apply(output, *trainable)


def _identity(x: object) -> object:
    return x


class _Regather:
    """What is saved for backward instead of a branch's gathered input rows: gather them again."""


def _enclosing_saved_tensor_hooks() -> tuple[Callable, Callable] | None:
    """The (pack, unpack) hooks in force around us (``save_on_cpu``, a user's), or ``None``."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return top(False) if top is not None else None


def _gathered_rows_not_saved(
    gathered: torch.Tensor, source: torch.Tensor, rows: torch.Tensor
) -> contextlib.AbstractContextManager:
    """Saved-tensor hooks under which a layer that saves ``gathered`` (the branch's first) keeps nothing new.

    In sample mode the branch runs on ``source.index_select(0, rows)``, a new tensor that its
    first layer would keep for backward, while ``source`` (the block input) is kept alive anyway.
    The hooks save a marker instead and gather the rows again from ``source`` when backward
    needs them: a little recomputation for one activation of the surviving rows less memory.
    Every other tensor goes through the hooks that were in force around the branch (innermost
    hooks win in PyTorch, so ``torch.autograd.graph.save_on_cpu`` or a user's own hooks would
    otherwise stop at the branch). Left out under ``torch.compile`` (the compiled graph decides
    what it saves) and when nothing needs gradients.
    """
    if not torch.is_grad_enabled() or torch.compiler.is_compiling():
        return contextlib.nullcontext()
    marker = _Regather()
    enclosing = _enclosing_saved_tensor_hooks()
    outer_pack, outer_unpack = enclosing if enclosing is not None else (_identity, _identity)

    def pack(tensor: torch.Tensor) -> object:
        return marker if tensor is gathered else outer_pack(tensor)

    def unpack(packed: object) -> torch.Tensor:
        return source.index_select(0, rows) if packed is marker else outer_unpack(packed)

    return torch.autograd.graph.saved_tensors_hooks(pack, unpack)


def rows_of(value: object, rows: torch.Tensor, batch_size: int, name: str) -> object:
    """The ``rows`` of a per-sample argument: a tensor of ``batch_size`` rows, or a tuple of them.

    ``None`` stays ``None``, and a tensor of one row stays whole (it broadcasts over the batch, as
    rotary position embeddings built from shared positions do). Anything else (another row
    count, a flex-attention ``BlockMask``) cannot be gathered: a ``ValueError`` in one line.
    """
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(rows_of(item, rows, batch_size, name) for item in value)
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        if value.shape[0] == batch_size:
            return value.index_select(0, rows)
        if value.shape[0] == 1:
            return value
    raise ValueError(
        f"cannot take the surviving rows of {name} ({type(value).__name__} of shape "
        f"{tuple(getattr(value, 'shape', ()))}) for a batch of {batch_size}; use drop_mode='batch'"
    )


@dataclass(frozen=True)
class BranchWithRowArguments:
    """A branch called with keyword arguments, of which ``per_row`` hold one entry per sample.

    An attention branch takes its mask (``[B, 1, T, S]``) and position embeddings (``[B, T, D]``)
    beside its input. Called whole (batch mode, evaluation), it passes them unchanged; in sample
    and subset mode :func:`run_branch` takes :meth:`on_rows`, which gathers each per-row argument's
    surviving rows with the input's.
    """

    branch: Callable[..., torch.Tensor]
    per_row: dict[str, object]
    shared: dict[str, object]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x, **self.shared, **self.per_row)

    def on_rows(self, rows: torch.Tensor, batch_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
        gathered = {name: rows_of(value, rows, batch_size, name) for name, value in self.per_row.items()}
        return functools.partial(self.branch, **self.shared, **gathered)


def run_branch(
    branch: Callable[[torch.Tensor], torch.Tensor], branch_input: torch.Tensor, rows: torch.Tensor | None
) -> torch.Tensor:
    """``branch(branch_input)``, on ``rows`` of it only if given (sample and subset mode).

    The part of a training step's residual sum that ``torch.compile`` compiles: each branch
    calls its own copy of this function (:func:`branch_runner`), so the graphs of one branch
    never count against another's recompile limit. A :class:`BranchWithRowArguments` gets
    its per-row arguments' rows with the input's.
    """
    if rows is None:
        return branch(branch_input)
    if isinstance(branch, BranchWithRowArguments):
        branch = branch.on_rows(rows, branch_input.shape[0])
    gathered = branch_input.index_select(0, rows)
    with _gathered_rows_not_saved(gathered, branch_input, rows):
        return branch(gathered)


_RUNNERS: dict[int, Callable[..., torch.Tensor]] = {}


def branch_runner(index: int) -> Callable[..., torch.Tensor]:
    """:func:`run_branch` with a code object of its own for branch ``index`` of a network.

    ``torch.compile`` keeps its graphs and its recompile limit (8 by default) per code object.
    With one shared function, the blocks of a network (other widths, strides, survival
    probabilities) would recompile it until the limit and then run uncompiled; with one copy
    per branch index, each branch compiles once (sample mode: once more for the subset rows,
    and once with a dynamic batch size). Networks of one process share a branch's copy.
    """
    runner = _RUNNERS.get(index)
    if runner is None:
        name = f"run_branch_{index}"
        code = run_branch.__code__.replace(co_name=name)
        runner = types.FunctionType(code, run_branch.__globals__, name)
        _RUNNERS[index] = runner
    return runner


@torch.compiler.disable
def gated_residual(
    shortcut: torch.Tensor,
    added: torch.Tensor,
    rows: torch.Tensor | None,
    post_activation: Callable[[torch.Tensor], torch.Tensor],
    dropped_returns_shortcut: bool,
    alpha: float,
) -> torch.Tensor:
    """``post_activation(shortcut + alpha * added)``, where ``added`` is a branch's output on ``rows`` only if given.

    In sample and subset mode the branch's output is added back into its rows; with
    ``dropped_returns_shortcut`` the post-activation runs on those rows only (the others are
    the shortcut, unchanged by it), so nothing full-sized is kept for backward. Never compiled:
    a few elementwise operations whose shapes differ in every block and every subset size.
    """
    if rows is None:
        return post_activation(shortcut.add(added, alpha=alpha))
    added = added.to(shortcut.dtype)
    if dropped_returns_shortcut:
        return shortcut.index_copy(0, rows, post_activation(shortcut.index_select(0, rows).add(added, alpha=alpha)))
    return post_activation(shortcut.index_add(0, rows, added, alpha=alpha))


class StochasticModule(nn.Module):
    """What every stochastic residual module provides: its branches' p_l, gates, parameters and a plain copy.

    Branch ``k`` of the module draws gate ``first_index + k`` of its :class:`GateGenerator`.
    """

    survival_probs: tuple[float, ...]
    first_index: int
    gates: GateGenerator

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Each stochastic module's own ``forward`` runs eagerly in training (:func:`_eager_in_training`).

        Wrapped before the base classes see the new class, so a base that wraps ``forward`` itself
        (transformers' ``GradientCheckpointingLayer``) stays the outermost wrapper.
        """
        forward = cls.__dict__.get("forward")
        if forward is not None:
            cls.forward = _eager_in_training(forward)
        super().__init_subclass__(**kwargs)

    def branch_parameters(self, which: int) -> Iterable[nn.Parameter]:
        """The parameters that only branch ``which`` uses (they get a zero gradient when it is dropped)."""
        raise NotImplementedError

    def probs_in_force(self) -> tuple[float, ...]:
        """Each branch's survival probability at the current step of the time schedule (``survival_probs``: the
        depth schedule's)."""
        first = self.first_index
        return tuple(self.gates.probs_in_force[first : first + len(self.survival_probs)])

    def folded(self) -> nn.Module:
        """A plain module with each p_l multiplied into its branch under the paper's scaling (eq. 5)."""
        raise NotImplementedError


def _eager_in_training(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``forward`` of a stochastic module, run eagerly under ``torch.compile`` in training, traced in evaluation.

    In training a block's gates are host decisions, so ``torch.compile`` breaks its graph
    there. Were the break inside the block's ``forward``, every block of a class would compile
    that ``forward`` as a frame of its own, one code object for all of them, and a network
    with more than 8 kinds of block (widths, strides, shortcuts: torchvision's ResNet-50)
    would pass dynamo's default recompile limit and run blocks uncompiled. Breaking before
    the first operation leaves that frame empty; the modules the block calls compile (each
    branch through its own :func:`branch_runner`). Evaluation is traced whole.
    """
    eager = torch.compiler.disable(forward, recursive=False)

    @functools.wraps(forward)
    def forward_eagerly_in_training(self: StochasticModule, *args: object, **kwargs: object) -> torch.Tensor:
        if self.training and not self.gates.every_block:
            return eager(self, *args, **kwargs)
        return forward(self, *args, **kwargs)

    _never_a_frame_of_its_own(forward_eagerly_in_training)
    return forward_eagerly_in_training


def stochastic_residual(
    shortcut: torch.Tensor,
    branch_input: torch.Tensor,
    branch: Callable[[torch.Tensor], torch.Tensor],
    block: StochasticModule,
    which: int = 0,
    post_activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    dropped_returns_shortcut: bool = False,
) -> torch.Tensor:
    """Residual branch ``which`` of a stochastic ``block``: training gates it, evaluation runs it.

    Evaluation (or :func:`~stochdepth.run_every_block`) scales the branch by p_l under the
    paper's scaling, not under the inverted one; p_l is the probability in force at the current
    step of the time schedule (:attr:`GateGenerator.probs_in_force`). Every stochastic module
    (this library's blocks and the adapters of other libraries' blocks) computes its residual
    sums here. Evaluation is plain tensor code (``torch.compile`` traces it whole and
    ``torch.export`` exports it); training goes through :func:`gated_training_residual`.

    Traced, p_l multiplies the branch rather than entering as ``add``'s ``alpha``: the compiler
    needs an ``alpha`` as a constant, so every new p_l of a time schedule recompiled evaluation
    until dynamo's recompile limit sent it back to eager. As a factor it is an input of the
    graph, and evaluation compiles twice at most (once with p_l a constant, once with it an
    input), where ``torch._dynamo.config.specialize_float`` is False (the default of recent
    PyTorch releases). Eager evaluation keeps ``alpha``, a single rounding.
    """
    gates = block.gates
    post_activation = post_activation if post_activation is not None else _identity
    if block.training and not gates.every_block:
        return gated_training_residual(
            shortcut, branch_input, branch, block, which, post_activation, dropped_returns_shortcut
        )
    out = branch(branch_input)
    if gates.scaling != "paper":
        return post_activation(shortcut + out)
    survival_prob = gates.probs_in_force[block.first_index + which]
    if torch.compiler.is_compiling():
        return post_activation(shortcut + out * survival_prob)
    if survival_prob < 1.0:
        return post_activation(shortcut.add(out, alpha=survival_prob))
    return post_activation(shortcut + out)


@torch.compiler.disable(recursive=False)
def gated_training_residual(
    shortcut: torch.Tensor,
    branch_input: torch.Tensor,
    branch: Callable[[torch.Tensor], torch.Tensor],
    block: StochasticModule,
    which: int,
    post_activation: Callable[[torch.Tensor], torch.Tensor],
    dropped_returns_shortcut: bool,
) -> torch.Tensor:
    """A training step's residual sum: the gate decides, a dropped branch is not run.

    Under ``torch.compile`` this function runs eagerly (the gates are host decisions, and a
    new gate pattern must not recompile) while the branch it calls is compiled, through its
    own :func:`branch_runner`; the scale is applied here, so a survival probability that
    changes over training (a time schedule) recompiles nothing.
    """
    gates = block.gates
    index = block.first_index + which
    batch_size = branch_input.shape[0]
    runs, rows = gates.gate(index, batch_size, branch_input.device)
    if not runs:
        out = shortcut if dropped_returns_shortcut else post_activation(shortcut)
        return give_zero_gradients(out, block.branch_parameters(which))
    added = branch_runner(index)(branch, branch_input, rows)
    ran = batch_size if rows is None else rows.shape[0]
    alpha = training_scale(gates.scaling, gates.drop_mode, gates.probs_in_force[index], ran, batch_size)
    return gated_residual(shortcut, added, rows, post_activation, dropped_returns_shortcut, alpha)


def _never_a_frame_of_its_own(*functions: Callable[..., object]) -> None:
    """``torch.compile`` never compiles a call of these from eager code as a frame of its own (it still
    compiles what they call, and inlines them where it traces their caller).

    In training a stochastic module's ``forward`` runs eagerly; the calls it makes into
    :func:`stochastic_residual` and the modules' ``forward`` wrapper would otherwise be
    compiled as frames, one code object for every block, whose guards (widths, strides,
    aliasing of shortcut and input) pass dynamo's recompile limit on networks with many
    kinds of block. Uses dynamo's own mechanism for ``torch.compiler.disable(recursive=False)``
    where this PyTorch has it.
    """
    skip_code = getattr(getattr(torch, "_dynamo", None) and torch._dynamo.eval_frame, "skip_code", None)
    if skip_code is not None:
        for function in functions:
            skip_code(function.__code__)


_never_a_frame_of_its_own(stochastic_residual)


class ResidualBlock(nn.Module):
    """A plain residual block: ``post_activation(shortcut(y) + branch(y))``, ``y = pre_activation(x)``.

    This is what a model family declares. ``pre_activation`` is the part shared by both
    paths (the BN-ReLU that pre-activation families apply before a projection shortcut
    and the branch); when the shortcut is an identity, a pre-activation belongs in the
    branch instead. The branch must end with its last affine layer (a BatchNorm or a
    convolution, possibly followed by layers that are identities in evaluation), which is
    where :func:`~stochdepth.fold_survival` puts the survival probability.

    ``dropped_returns_shortcut`` declares that ``post_activation(shortcut(y)) == shortcut(y)``
    for every input the block sees (a ReLU after an identity or option-A shortcut of a ReLU
    output): the paper's eq. 2 then gives a dropped block's output as the shortcut itself.
    """

    def __init__(
        self,
        branch: nn.Module,
        shortcut: nn.Module | None = None,
        pre_activation: nn.Module | None = None,
        post_activation: nn.Module | None = None,
        dropped_returns_shortcut: bool = False,
    ) -> None:
        super().__init__()
        self.pre_activation = pre_activation if pre_activation is not None else nn.Identity()
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.branch = branch
        self.post_activation = post_activation if post_activation is not None else nn.Identity()
        self.dropped_returns_shortcut = dropped_returns_shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_activation(x)
        return self.post_activation(self.shortcut(x) + self.branch(x))


class StochasticResidual(ResidualBlock, StochasticModule):
    """A :class:`ResidualBlock` with stochastic depth (module docstring for the behaviour)."""

    def __init__(self, block: ResidualBlock, survival_prob: float, index: int, gates: GateGenerator) -> None:
        super().__init__(
            block.branch, block.shortcut, block.pre_activation, block.post_activation, block.dropped_returns_shortcut
        )
        self.survival_prob = survival_prob
        self.survival_probs = (survival_prob,)
        self.first_index = index
        self.gates = gates

    def extra_repr(self) -> str:
        return f"survival_prob={self.survival_prob:.4f}, drop_mode={self.gates.drop_mode}, scaling={self.gates.scaling}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_activation(x)
        shortcut = self.shortcut(x)
        return stochastic_residual(
            shortcut, x, self.branch, self, 0, self.post_activation, self.dropped_returns_shortcut
        )

    def branch_parameters(self, which: int) -> Iterable[nn.Parameter]:
        return self.branch.parameters()

    def folded(self) -> ResidualBlock:
        (prob,) = self.probs_in_force()
        if self.gates.scaling == "paper" and prob < 1.0:
            scale_last_affine_layer(self.branch, prob)
        return ResidualBlock(
            self.branch, self.shortcut, self.pre_activation, self.post_activation, self.dropped_returns_shortcut
        )


@dataclass(frozen=True)
class ResidualAdapter:
    """How the mechanism recognises one module type as residual branches and makes it stochastic.

    ``num_branches(module)`` is how many residual branches the module holds (a transformer
    block holds two); ``make_stochastic(module, survival_probs, first_index, gates)`` returns
    the stochastic replacement, whose branches take gates ``first_index``, ``first_index + 1``...
    ``default_scaling`` is the convention the module's weights are trained with: ``"inverted"``
    for other libraries' blocks (their own drop path rescales in training), ``"paper"`` for
    this library's. ``native_drop_paths(module)`` lists, per branch, the module's own drop-path
    layer (timm's ``DropPath``, torchvision's ``StochasticDepth``) or ``None``: their rates are
    taken over as the schedule (:func:`~stochdepth.stochastic_depth`).
    """

    num_branches: Callable[[nn.Module], int]
    make_stochastic: Callable[[nn.Module, list[float], int, GateGenerator], StochasticModule]
    default_scaling: str = "inverted"
    native_drop_paths: Callable[[nn.Module], list[nn.Module | None]] = lambda module: []


_ADAPTERS: dict[type[nn.Module], ResidualAdapter] = {}


def register_residual_adapter(module_type: type[nn.Module], adapter: ResidualAdapter) -> None:
    """Teach the discovery rule a module type (and its subclasses); a type is registered once."""
    if module_type in _ADAPTERS:
        raise ValueError(f"a residual adapter for {module_type.__name__} is already registered")
    _ADAPTERS[module_type] = adapter


def adapter_for(module: nn.Module) -> ResidualAdapter | None:
    """The adapter registered for ``module``'s type or its nearest registered base class."""
    return next((_ADAPTERS[kind] for kind in type(module).__mro__ if kind in _ADAPTERS), None)


def _make_stochastic_residual(block: nn.Module, probs: list[float], index: int, gates: GateGenerator) -> nn.Module:
    return StochasticResidual(block, probs[0], index, gates)


def _one_branch(block: nn.Module) -> int:
    return 1


register_residual_adapter(
    ResidualBlock,
    ResidualAdapter(num_branches=_one_branch, make_stochastic=_make_stochastic_residual, default_scaling="paper"),
)


def scale_last_affine_layer(branch: nn.Module, scale: float) -> None:
    """Multiply the weight and bias of ``branch``'s last affine layer by ``scale`` (in place)."""
    affine = [module for module in branch.modules() if isinstance(module, AFFINE_LAYERS)]
    if not affine:
        raise ValueError(f"branch has no affine layer to fold a survival probability into: {branch}")
    last = affine[-1]
    if last.weight is None:
        raise ValueError(f"the branch's last affine layer has no weight to scale: {last}")
    with torch.no_grad():
        last.weight.mul_(scale)
        if last.bias is not None:
            last.bias.mul_(scale)
