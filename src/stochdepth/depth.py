"""The stochastic-depth mechanism: survival schedules, gates, skipping and scaling.

Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016, section 3. This is
the one place where the mechanism lives. Model families only declare
:class:`ResidualBlock` parts (a shortcut, a branch, an optional pre-activation shared by
both paths and an optional post-addition activation); :func:`stochastic_depth` then
turns every such block into a :class:`StochasticResidual` that owns its survival
probability and gate. Families never see a gate.

Training, ``drop_mode="batch"`` (the paper): one Bernoulli draw per block per
mini-batch. A dropped block returns its shortcut and its branch is *not executed*,
forward or backward; that is where the paper's training-time saving comes from.

Training, ``drop_mode="sample"``: a random subset of the samples survives and the
branch runs on those rows only (gathered, then added back with ``index_add``), so
compute still falls with the survival probability. Subset size rule, with
``expected = survival_prob * batch_size``: the size is ``floor(expected)`` or
``floor(expected) + 1`` (stochastic rounding, so its mean is exactly ``expected``); a
size of one, which would leave BatchNorm a single sample (an error on 1x1 feature maps),
becomes zero or two with equal probability, which keeps the mean. Every sample is
therefore in the subset with probability exactly ``survival_prob``.

Evaluation: every block runs and its branch is multiplied by its survival probability
(the paper's eq. 5). No rescaling happens during training.

Gates come from a :class:`GateGenerator`: a host-side, seeded ``torch.Generator`` owned
by the model, so drawing a gate never waits for the device and a run is reproducible.
In batch mode each training forward pass draws exactly one number per stochastic block,
so the gate sequence depends only on the seed and the step, and every distributed rank
draws the same gates.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

SURVIVAL_RULES = ("linear", "uniform", "none")
DROP_MODES = ("batch", "sample")

DEFAULT_SURVIVAL_RULE = "linear"
DEFAULT_FINAL_SURVIVAL_PROB = 0.5
DEFAULT_DROP_MODE = "batch"


def check_depth_options(survival_rule: str, final_survival_prob: float, drop_mode: str) -> None:
    """Raise ``ValueError`` naming what is allowed if any stochastic-depth option is bad."""
    if survival_rule not in SURVIVAL_RULES:
        raise ValueError(f"unknown survival_rule {survival_rule!r}; choose one of {', '.join(SURVIVAL_RULES)}")
    if drop_mode not in DROP_MODES:
        raise ValueError(f"unknown drop_mode {drop_mode!r}; choose one of {', '.join(DROP_MODES)}")
    if isinstance(final_survival_prob, bool) or not isinstance(final_survival_prob, (int, float)):
        raise ValueError(f"final_survival_prob must be a number in (0, 1], got {final_survival_prob!r}")
    if not 0.0 < final_survival_prob <= 1.0:
        raise ValueError(f"final_survival_prob must be in (0, 1], got {final_survival_prob}")


def survival_schedule(
    num_blocks: int,
    survival_rule: str = DEFAULT_SURVIVAL_RULE,
    final_survival_prob: float = DEFAULT_FINAL_SURVIVAL_PROB,
) -> list[float]:
    """Survival probability p_l of each residual block l = 1..L.

    ``"linear"``: p_l = 1 - (l / L) (1 - p_L), the paper's eq. 4 (so block 1 can be dropped
    too and block L survives with p_L). ``"uniform"``: p_l = p_L. ``"none"``: p_l = 1,
    the constant-depth baseline.
    """
    check_depth_options(survival_rule, final_survival_prob, DEFAULT_DROP_MODE)
    if survival_rule == "none":
        return [1.0] * num_blocks
    if survival_rule == "uniform":
        return [float(final_survival_prob)] * num_blocks
    return [1.0 - (block / num_blocks) * (1.0 - final_survival_prob) for block in range(1, num_blocks + 1)]


def survivor_count(survival_prob: float, batch_size: int, rounding_draw: float, split_draw: float) -> int:
    """How many samples run the branch in sample mode (module docstring for the rule).

    ``rounding_draw`` and ``split_draw`` are uniform numbers in [0, 1): the first rounds
    ``survival_prob * batch_size`` stochastically, the second turns a count of one into
    zero or two. The expected count is exactly ``survival_prob * batch_size``.
    """
    expected = survival_prob * batch_size
    count = math.floor(expected) + int(rounding_draw < expected - math.floor(expected))
    count = min(count, batch_size)
    if count == 1 and batch_size >= 2:
        count = 2 if split_draw < 0.5 else 0
    return count


class GateGenerator:
    """The model's host-side source of gates: a seeded CPU ``torch.Generator``.

    Drawing on the host means no device-to-host synchronisation per block. Its state
    (:meth:`state_dict`) belongs in every checkpoint so that a resumed run draws the gates
    an uninterrupted run would have drawn.

    ``branches_run`` counts the residual branches that ran in training forward passes (a
    sample-mode branch counts the fraction of the batch it ran on): the realised depth,
    which a trainer reads and resets with :meth:`take_branches_run`.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.branches_run = 0.0

    def take_branches_run(self) -> float:
        """The branches run since the last call, and reset the count."""
        count, self.branches_run = self.branches_run, 0.0
        return count

    def block_survives(self, survival_prob: float) -> bool:
        """One Bernoulli(survival_prob) draw: does the block run on this mini-batch?"""
        return torch.rand((), generator=self.generator).item() < survival_prob

    def surviving_samples(self, survival_prob: float, batch_size: int) -> torch.Tensor:
        """Sorted indices (CPU, int64) of the samples whose branch runs in sample mode."""
        rounding_draw, split_draw = torch.rand(2, generator=self.generator).tolist()
        count = survivor_count(survival_prob, batch_size, rounding_draw, split_draw)
        return torch.randperm(batch_size, generator=self.generator)[:count].sort().values

    def state_dict(self) -> dict[str, object]:
        return {"seed": self.seed, "state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.seed = int(state["seed"])
        self.generator.set_state(state["state"])

    def __getstate__(self) -> dict[str, object]:
        return self.state_dict()

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(int(state["seed"]))
        self.load_state_dict(state)


class ResidualBlock(nn.Module):
    """A plain residual block: ``post_activation(shortcut(y) + branch(y))``, ``y = pre_activation(x)``.

    This is what a model family declares. ``pre_activation`` is the part shared by both
    paths (the BN-ReLU that pre-activation families apply before a projection shortcut
    and the branch); when the shortcut is an identity, a pre-activation belongs in the
    branch instead. The branch must end with its last affine layer (a BatchNorm or a
    convolution, possibly followed by layers that are identities in evaluation), which is
    where :func:`fold_survival` puts the survival probability.
    """

    def __init__(
        self,
        branch: nn.Module,
        shortcut: nn.Module | None = None,
        pre_activation: nn.Module | None = None,
        post_activation: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.pre_activation = pre_activation if pre_activation is not None else nn.Identity()
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.branch = branch
        self.post_activation = post_activation if post_activation is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_activation(x)
        return self.post_activation(self.shortcut(x) + self.branch(x))


class StochasticResidual(ResidualBlock):
    """A residual block with stochastic depth (module docstring for the behaviour)."""

    def __init__(self, block: ResidualBlock, survival_prob: float, drop_mode: str, gates: GateGenerator) -> None:
        super().__init__(block.branch, block.shortcut, block.pre_activation, block.post_activation)
        self.survival_prob = survival_prob
        self.drop_mode = drop_mode
        self.gates = gates

    def extra_repr(self) -> str:
        return f"survival_prob={self.survival_prob:.4f}, drop_mode={self.drop_mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_activation(x)
        shortcut = self.shortcut(x)
        if not self.training:
            branch = self.branch(x)
            if self.survival_prob < 1.0:
                branch = branch * self.survival_prob
            return self.post_activation(shortcut + branch)
        if self.survival_prob >= 1.0 or (self.drop_mode == "batch" and self.gates.block_survives(self.survival_prob)):
            self.gates.branches_run += 1.0
            return self.post_activation(shortcut + self.branch(x))
        if self.drop_mode == "batch":
            return self.post_activation(shortcut)
        batch_size = x.shape[0]
        survivors = self.gates.surviving_samples(self.survival_prob, batch_size)
        self.gates.branches_run += len(survivors) / batch_size
        if len(survivors) == 0:
            return self.post_activation(shortcut)
        if len(survivors) == batch_size:
            return self.post_activation(shortcut + self.branch(x))
        survivors = survivors.to(x.device, non_blocking=True)
        branch = self.branch(x.index_select(0, survivors))
        return self.post_activation(shortcut.index_add(0, survivors, branch.to(shortcut.dtype)))


def replace_blocks(model: nn.Module, block_type: type[nn.Module], make: Callable[[int, nn.Module], nn.Module]) -> int:
    """Replace every submodule of ``block_type`` (in forward order) by ``make(index, block)``."""
    found = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, block_type)
    ]
    for index, (parent, name, child) in enumerate(found):
        setattr(parent, name, make(index, child))
    return len(found)


def stochastic_depth(
    model: nn.Module,
    survival_rule: str = DEFAULT_SURVIVAL_RULE,
    final_survival_prob: float = DEFAULT_FINAL_SURVIVAL_PROB,
    drop_mode: str = DEFAULT_DROP_MODE,
    gate_seed: int = 0,
) -> nn.Module:
    """Give every :class:`ResidualBlock` of ``model`` its survival probability and gate.

    Blocks are numbered l = 1..L in the order the model registers them, which every
    family in this library makes the forward order. The model gets a ``gate_generator``
    attribute (a :class:`GateGenerator` seeded with ``gate_seed``) shared by its blocks,
    and a ``depth_options`` dict of the options it was built with.
    Returns ``model``, changed in place.
    """
    check_depth_options(survival_rule, final_survival_prob, drop_mode)
    if any(True for _ in stochastic_blocks(model)):
        raise ValueError("stochastic depth is already applied to this model")
    num_blocks = sum(1 for module in model.modules() if isinstance(module, ResidualBlock))
    probs = survival_schedule(num_blocks, survival_rule, final_survival_prob)
    gates = GateGenerator(gate_seed)

    def make_stochastic(index: int, block: ResidualBlock) -> StochasticResidual:
        return StochasticResidual(block, probs[index], drop_mode, gates)

    replace_blocks(model, ResidualBlock, make_stochastic)
    model.gate_generator = gates
    model.depth_options = {
        "survival_rule": survival_rule,
        "final_survival_prob": final_survival_prob,
        "drop_mode": drop_mode,
    }
    return model


def stochastic_blocks(model: nn.Module) -> Iterator[StochasticResidual]:
    """The model's stochastic residual blocks, l = 1..L."""
    return (module for module in model.modules() if isinstance(module, StochasticResidual))


def survival_probs(model: nn.Module) -> list[float]:
    """p_l of every residual block of ``model``, in order ([] for a family without any)."""
    return [block.survival_prob for block in stochastic_blocks(model)]


AFFINE_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.modules.conv._ConvNd, nn.Linear)


def _scale_last_affine_layer(branch: nn.Module, scale: float) -> None:
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


def fold_survival(model: nn.Module) -> nn.Module:
    """An evaluation-only copy of ``model`` with each p_l folded into its branch's weights.

    The weight and bias of each branch's last affine layer (a BatchNorm in post-activation
    families, the last convolution in pre-activation ones) are multiplied by p_l, which
    scales the branch's output by p_l exactly as eq. 5 of the paper does at test time,
    and each block becomes a plain :class:`ResidualBlock`. The result has no stochastic
    parts, costs what a plain network costs, and exports with ``torch.export``. The input
    model is not changed.
    """
    folded = copy.deepcopy(model).eval()

    def fold(_: int, block: StochasticResidual) -> ResidualBlock:
        if block.survival_prob < 1.0:
            _scale_last_affine_layer(block.branch, block.survival_prob)
        return ResidualBlock(block.branch, block.shortcut, block.pre_activation, block.post_activation)

    replace_blocks(folded, StochasticResidual, fold)
    folded.__dict__.pop("gate_generator", None)
    folded.__dict__.pop("depth_options", None)
    return folded


def gate_generator(model: nn.Module) -> GateGenerator:
    """The :class:`GateGenerator` that :func:`stochastic_depth` gave ``model``."""
    gates = getattr(model, "gate_generator", None)
    if not isinstance(gates, GateGenerator):
        raise ValueError("this model has no gate generator; build it with stochdepth.create_model")
    return gates


def fill_missing_grads_with_zeros(optimizer: torch.optim.Optimizer) -> RemovableHandle:
    """Make ``optimizer`` update dropped blocks as the paper's code did.

    A dropped block's branch does not run, so its parameters get no gradient, and with
    PyTorch's default ``zero_grad(set_to_none=True)`` their ``.grad`` is ``None``, which
    makes SGD skip them: no weight decay, no momentum. The paper's Torch code updated
    them with a zero gradient. This registers a step pre-hook that gives every trainable
    parameter whose gradient is ``None`` a zero gradient just before each step, so weight
    decay and momentum apply every step. Returns the hook's handle.
    """

    def give_zero_grads(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        for group in opt.param_groups:
            for param in group["params"]:
                if param.grad is None and param.requires_grad:
                    param.grad = torch.zeros_like(param)

    return optimizer.register_step_pre_hook(give_zero_grads)
