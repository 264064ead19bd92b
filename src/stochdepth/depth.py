"""The stochastic-depth mechanism: survival schedules, gates, skipping and scaling.

Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016, section 3. This is the one
place where the mechanism lives. Model families only declare :class:`ResidualBlock` parts
(a shortcut, a branch, an optional pre-activation shared by both paths and an optional
post-addition activation); :func:`stochastic_depth` finds the residual blocks of any network
(through one discovery rule, :func:`register_residual_adapter`) and turns each into a
stochastic module that owns its survival probability. Families never see a gate.

Training, ``drop_mode="batch"`` (the paper): one Bernoulli draw per residual branch per
mini-batch. A dropped branch is *not executed*, forward or backward; that is where the
paper's training-time saving comes from. Where the family declares that its post-addition
activation leaves the shortcut unchanged (a ReLU after a parameter-free shortcut of a ReLU
output), a dropped block returns the shortcut itself, H_l = id(H_{l-1}) as in eq. 2 of the
paper, so it keeps no activation for backward either.

Training, ``drop_mode="sample"``: a random subset of the samples survives and the branch runs
on those rows only (gathered, then added back), so compute and saved activations fall with
the survival probability. Subset size rule, with ``expected = survival_prob * batch_size``:
the size is ``floor(expected)`` or ``floor(expected) + 1`` (stochastic rounding, so its mean
is exactly ``expected``); a size of one, which would leave BatchNorm a single sample, becomes
zero or two with equal probability, which keeps the mean. Every sample is therefore in the
subset with probability exactly ``survival_prob``.

Scaling, ``scaling="paper"``: no rescaling in training; in evaluation every branch runs and
is multiplied by its survival probability (eq. 5), which :func:`fold_survival` bakes into the
weights. ``scaling="inverted"`` (the convention of timm's ``drop_path`` and torchvision's
``StochasticDepth``, so of their pretrained weights): in training a surviving branch's output
is divided by p_l (batch mode) or, in sample mode, by the share of the batch it ran on; in
evaluation the plain branch runs. Both keep the expected training output equal to the
evaluation output. The scale is the ``alpha`` of the residual addition, so it costs no
extra tensor.

Gates come from a :class:`GateGenerator`: a host-side, seeded ``torch.Generator`` owned by the
model that draws the gates of *all* branches of a training step in one call (batch mode:
one vector of L uniforms; sample mode: the L subset sizes and one L x batch matrix). Drawing
never waits for the device, the gate sequence is a function of the seed and the step only,
and every distributed rank draws the same batch-mode gates.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

SURVIVAL_RULES = ("linear", "uniform", "none")
DROP_MODES = ("batch", "sample")
SCALINGS = ("paper", "inverted")

DEFAULT_SURVIVAL_RULE = "linear"
DEFAULT_FINAL_SURVIVAL_PROB = 0.5
DEFAULT_DROP_MODE = "batch"
DEFAULT_SCALING = "paper"


@dataclass(frozen=True)
class DepthOptions:
    """Resolved stochastic-depth options: no ``None`` left, constant depth has p_L = 1."""

    survival_rule: str
    final_survival_prob: float
    drop_mode: str
    scaling: str = DEFAULT_SCALING

    def as_dict(self) -> dict[str, object]:
        return {
            "survival_rule": self.survival_rule,
            "final_survival_prob": self.final_survival_prob,
            "drop_mode": self.drop_mode,
            "scaling": self.scaling,
        }


def resolve_depth_options(
    survival_rule: str | None = None,
    final_survival_prob: float | None = None,
    drop_mode: str | None = None,
    scaling: str | None = None,
    default_scaling: str = DEFAULT_SCALING,
) -> DepthOptions:
    """The options with this library's defaults filled in, checked; ``ValueError`` names what is allowed.

    Defaults: linear decay (eq. 4) to p_L = 0.5, batch mode, ``default_scaling`` (the paper's
    for this library's networks, inverted for torchvision's and timm's). With
    ``survival_rule="none"`` (constant depth) p_L is 1 whatever was given.
    """
    survival_rule = DEFAULT_SURVIVAL_RULE if survival_rule is None else survival_rule
    drop_mode = DEFAULT_DROP_MODE if drop_mode is None else drop_mode
    scaling = default_scaling if scaling is None else scaling
    if survival_rule not in SURVIVAL_RULES:
        raise ValueError(f"unknown survival_rule {survival_rule!r}; choose one of {', '.join(SURVIVAL_RULES)}")
    if drop_mode not in DROP_MODES:
        raise ValueError(f"unknown drop_mode {drop_mode!r}; choose one of {', '.join(DROP_MODES)}")
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; choose one of {', '.join(SCALINGS)}")
    if survival_rule == "none":
        return DepthOptions("none", 1.0, drop_mode, scaling)
    final_survival_prob = DEFAULT_FINAL_SURVIVAL_PROB if final_survival_prob is None else final_survival_prob
    if isinstance(final_survival_prob, bool) or not isinstance(final_survival_prob, (int, float)):
        raise ValueError(f"final_survival_prob must be a number in (0, 1], got {final_survival_prob!r}")
    if not 0.0 < final_survival_prob <= 1.0:
        raise ValueError(f"final_survival_prob must be in (0, 1], got {final_survival_prob}")
    return DepthOptions(survival_rule, float(final_survival_prob), drop_mode, scaling)


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
    options = resolve_depth_options(survival_rule, final_survival_prob)
    if options.survival_rule == "none":
        return [1.0] * num_blocks
    if options.survival_rule == "uniform":
        return [options.final_survival_prob] * num_blocks
    return [1.0 - (block / num_blocks) * (1.0 - options.final_survival_prob) for block in range(1, num_blocks + 1)]


def survivor_counts(
    survival_probs: torch.Tensor, batch_size: int, rounding_draws: torch.Tensor, split_draws: torch.Tensor
) -> torch.Tensor:
    """How many samples run each branch in sample mode (module docstring for the rule).

    ``rounding_draws`` and ``split_draws`` are uniform numbers in [0, 1), one per branch: the
    first rounds ``survival_prob * batch_size`` stochastically, the second turns a count of
    one into zero or two. The expected count is exactly ``survival_prob * batch_size``.
    """
    expected = survival_probs.double() * batch_size
    counts = expected.floor() + (rounding_draws.double() < expected - expected.floor()).double()
    counts = counts.clamp(max=batch_size).long()
    if batch_size >= 2:
        counts = torch.where(counts == 1, torch.where(split_draws < 0.5, 2, 0), counts)
    return counts


@dataclass
class StepGates:
    """The gates of one training step: per branch, whether (batch) or on which rows (sample) it runs.

    ``survives`` and ``rows`` are this process's; ``runs_anywhere`` says whether the branch
    runs on any row of the global batch (sample mode in data-parallel training: on another
    process's rows, perhaps), so whether it gets a gradient after DDP averages them.
    """

    survives: list[bool]
    rows: list[torch.Tensor | None]
    batch_size: int
    used: list[bool]
    runs_anywhere: list[bool]


class GateGenerator:
    """The model's host-side source of gates: a seeded CPU ``torch.Generator``.

    It knows every branch's survival probability and the drop mode, and draws a whole step's
    gates at once, the first time a branch asks for its gate in a step (a branch asking a
    second time starts the next step). Its state (:meth:`state_dict`) belongs in every
    checkpoint so that a resumed run draws the gates an uninterrupted run would have drawn.

    ``branches_run`` counts the residual branches that ran in training forward passes (a
    sample-mode branch counts the fraction of the batch it ran on): the realised depth,
    which a trainer reads and resets with :meth:`take_branches_run`.

    In data-parallel training every process holds a generator with the same seed and
    draws in lockstep. Batch mode: every process drops the same branches, as in the
    paper. Sample mode: each process is shard ``shard`` of ``shards`` (:meth:`shard_rows`);
    the gates are drawn for the whole global batch and each process takes its rows, so the
    processes together drop exactly what one process would.
    """

    def __init__(
        self,
        seed: int = 0,
        survival_probs: list[float] | None = None,
        drop_mode: str = DEFAULT_DROP_MODE,
        scaling: str = DEFAULT_SCALING,
    ) -> None:
        self.seed = seed
        self.survival_probs = torch.tensor(survival_probs or [], dtype=torch.float64)
        self.drop_mode = drop_mode
        self.scaling = scaling
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.branches_run = 0.0
        self.step: StepGates | None = None
        self.shard = 0
        self.shards = 1

    def shard_rows(self, shard: int, shards: int) -> None:
        """Draw sample-mode gates for ``shards`` equal parts of a global batch and keep part ``shard``'s rows."""
        if not 0 <= shard < shards:
            raise ValueError(f"shard {shard} of {shards} does not exist")
        self.shard, self.shards = shard, shards
        self.step = None

    def take_branches_run(self) -> float:
        """The branches run since the last call, and reset the count."""
        count, self.branches_run = self.branches_run, 0.0
        return count

    def draw_step(self, batch_size: int, device: torch.device) -> StepGates:
        """Draw every branch's gate for one training step (one host call per kind of draw)."""
        probs = self.survival_probs
        count = len(probs)
        if self.drop_mode == "batch":
            survives = (torch.rand(count, generator=self.generator, dtype=torch.float64) < probs).tolist()
            runs_anywhere = survives
            rows: list[torch.Tensor | None] = [None] * count
            self.branches_run += float(sum(survives))
        else:
            full = batch_size * self.shards
            draws = torch.rand(2, count, generator=self.generator, dtype=torch.float64)
            counts = survivor_counts(probs, full, draws[0], draws[1])
            order = torch.rand(count, full, generator=self.generator).argsort(dim=1)
            keep = torch.zeros(count, full, dtype=torch.bool)
            keep.scatter_(1, order, torch.arange(full).expand(count, -1) < counts[:, None])
            self.branches_run += counts.sum().item() / full
            runs_anywhere = (counts > 0).tolist()
            keep = keep[:, self.shard * batch_size : (self.shard + 1) * batch_size]
            counts = keep.sum(dim=1)
            flat = keep.nonzero()[:, 1]
            if device.type == "cuda":
                flat = flat.pin_memory()
            flat = flat.to(device, non_blocking=True)
            sizes = counts.tolist()
            ends = counts.cumsum(0).tolist()
            survives = [size > 0 for size in sizes]
            rows = [None if size in (0, batch_size) else flat[end - size : end] for size, end in zip(sizes, ends)]
        self.step = StepGates(survives, rows, batch_size, [False] * count, runs_anywhere)
        return self.step

    def gate(self, index: int, batch_size: int, device: torch.device) -> tuple[bool, torch.Tensor | None]:
        """Branch ``index``'s gate in this step: (runs at all, rows it runs on or ``None`` for all)."""
        step = self.step
        if step is None or step.used[index] or step.batch_size != batch_size:
            step = self.draw_step(batch_size, device)
        step.used[index] = True
        return step.survives[index], step.rows[index]

    def state_dict(self) -> dict[str, object]:
        return {"seed": self.seed, "state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.seed = int(state["seed"])
        self.generator.set_state(state["state"])
        self.step = None

    def __getstate__(self) -> dict[str, object]:
        return {
            **self.state_dict(),
            "survival_probs": self.survival_probs.tolist(),
            "drop_mode": self.drop_mode,
            "scaling": self.scaling,
        }

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(int(state["seed"]), state["survival_probs"], state["drop_mode"], state["scaling"])
        self.load_state_dict(state)


def training_scale(scaling: str, drop_mode: str, survival_prob: float, rows: int, batch_size: int) -> float:
    """The factor on a branch that ran on ``rows`` of ``batch_size`` samples in a training step.

    ``"paper"``: 1 (section 3: no rescaling in training). ``"inverted"``: 1 / p_l in batch
    mode; in sample mode ``batch_size / rows``, the inverse of the share of the batch the
    branch actually ran on (which has expectation p_l, so the sum's expectation over the
    batch is the evaluation output).
    """
    if scaling == "paper":
        return 1.0
    if drop_mode == "batch":
        return 1.0 / survival_prob
    return batch_size / rows


def gated_residual(
    shortcut: torch.Tensor,
    branch_input: torch.Tensor,
    branch: Callable[[torch.Tensor], torch.Tensor],
    gate: tuple[bool, torch.Tensor | None],
    post_activation: Callable[[torch.Tensor], torch.Tensor],
    dropped_returns_shortcut: bool,
    scale: Callable[[int], float],
) -> torch.Tensor:
    """``post_activation(shortcut + scale * branch(branch_input))`` where the gate lets the branch run.

    ``gate`` is :meth:`GateGenerator.gate`'s answer and ``scale(rows)`` the branch's factor
    when it ran on that many rows. A dropped branch is not called. In sample mode the branch
    runs on the surviving rows only and its output is added back into those rows; with
    ``dropped_returns_shortcut`` the post-activation runs on those rows only (the others are
    the shortcut, unchanged by it), so nothing full-sized is kept for backward.
    """
    runs, rows = gate
    if not runs:
        return shortcut if dropped_returns_shortcut else post_activation(shortcut)
    if rows is None:
        return post_activation(shortcut.add(branch(branch_input), alpha=scale(branch_input.shape[0])))
    added = branch(branch_input.index_select(0, rows)).to(shortcut.dtype)
    alpha = scale(rows.shape[0])
    if dropped_returns_shortcut:
        return shortcut.index_copy(0, rows, post_activation(shortcut.index_select(0, rows).add(added, alpha=alpha)))
    return post_activation(shortcut.index_add(0, rows, added, alpha=alpha))


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


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

    Evaluation scales the branch by p_l under the paper's scaling (eq. 5), not under the
    inverted one (module docstring). Every stochastic module (this library's blocks and the
    adapters of other libraries' blocks) computes its residual sums here.
    """
    survival_prob = block.survival_probs[which]
    gates = block.gates
    post_activation = post_activation if post_activation is not None else _identity
    if not block.training:
        out = branch(branch_input)
        if gates.scaling == "paper" and survival_prob < 1.0:
            return post_activation(shortcut.add(out, alpha=survival_prob))
        return post_activation(shortcut + out)
    batch_size = branch_input.shape[0]
    gate = gates.gate(block.first_index + which, batch_size, branch_input.device)

    def scale(rows: int) -> float:
        return training_scale(gates.scaling, gates.drop_mode, survival_prob, rows, batch_size)

    return gated_residual(shortcut, branch_input, branch, gate, post_activation, dropped_returns_shortcut, scale)


class ResidualBlock(nn.Module):
    """A plain residual block: ``post_activation(shortcut(y) + branch(y))``, ``y = pre_activation(x)``.

    This is what a model family declares. ``pre_activation`` is the part shared by both
    paths (the BN-ReLU that pre-activation families apply before a projection shortcut
    and the branch); when the shortcut is an identity, a pre-activation belongs in the
    branch instead. The branch must end with its last affine layer (a BatchNorm or a
    convolution, possibly followed by layers that are identities in evaluation), which is
    where :func:`fold_survival` puts the survival probability.

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


class StochasticModule(nn.Module):
    """What every stochastic residual module provides: its branches' p_l, gates and a plain folded copy.

    Branch ``k`` of the module draws gate ``first_index + k`` of its :class:`GateGenerator`.
    """

    survival_probs: tuple[float, ...]
    first_index: int
    gates: GateGenerator

    def folded(self) -> nn.Module:
        """A plain module with each p_l multiplied into its branch (eq. 5 baked into the weights)."""
        raise NotImplementedError


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

    def folded(self) -> ResidualBlock:
        if self.gates.scaling == "paper" and self.survival_prob < 1.0:
            scale_last_affine_layer(self.branch, self.survival_prob)
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
    this library's.
    """

    num_branches: Callable[[nn.Module], int]
    make_stochastic: Callable[[nn.Module, list[float], int, GateGenerator], StochasticModule]
    default_scaling: str = "inverted"


_ADAPTERS: dict[type[nn.Module], ResidualAdapter] = {}


def register_residual_adapter(module_type: type[nn.Module], adapter: ResidualAdapter) -> None:
    """Teach the discovery rule a module type (and its subclasses); a type is registered once."""
    if module_type in _ADAPTERS:
        raise ValueError(f"a residual adapter for {module_type.__name__} is already registered")
    _ADAPTERS[module_type] = adapter


register_residual_adapter(
    ResidualBlock,
    ResidualAdapter(
        num_branches=lambda block: 1,
        make_stochastic=lambda block, probs, index, gates: StochasticResidual(block, probs[0], index, gates),
        default_scaling="paper",
    ),
)


def _adapter(module: nn.Module) -> ResidualAdapter | None:
    return next((_ADAPTERS[kind] for kind in type(module).__mro__ if kind in _ADAPTERS), None)


def _children_in_order(
    model: nn.Module, stop: Callable[[nn.Module], bool]
) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """(parent, name, child) in registration order, not descending into children where ``stop`` holds."""
    for name, child in model.named_children():
        yield model, name, child
        if not stop(child):
            yield from _children_in_order(child, stop)


def find_residual_blocks(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module, ResidualAdapter]]:
    """The residual blocks of ``model`` (declared :class:`ResidualBlock`\\ s and registered adapter types).

    Registration order, which every family in this library makes the forward order.
    """

    def recognised(module: nn.Module) -> bool:
        return isinstance(module, StochasticModule) or _adapter(module) is not None

    return [
        (parent, name, child, _adapter(child))
        for parent, name, child in _children_in_order(model, recognised)
        if _adapter(child) is not None and not isinstance(child, StochasticModule)
    ]


def stochastic_depth(
    model: nn.Module,
    survival_rule: str | None = None,
    final_survival_prob: float | None = None,
    drop_mode: str | None = None,
    gate_seed: int = 0,
    scaling: str | None = None,
) -> nn.Module:
    """Give every residual branch of ``model`` its survival probability and gate.

    Branches are numbered l = 1..L in the order the model registers its blocks. The model
    gets a ``gate_generator`` attribute (a :class:`GateGenerator` seeded with ``gate_seed``)
    shared by its blocks, and a ``depth_options`` dict of the resolved options. ``scaling``
    defaults to the convention the blocks were trained with: ``"paper"`` for this library's
    blocks, ``"inverted"`` for torchvision's and timm's, so converting a trained network
    keeps its evaluation outputs. A model in which no residual block is recognised is a
    ``ValueError`` unless ``survival_rule`` is ``"none"``. Returns ``model``, changed in place.
    """
    if any(True for _ in stochastic_blocks(model)):
        raise ValueError("stochastic depth is already applied to this model")
    _refuse_existing_drop_path(model)
    from stochdepth.models import external

    external.register_adapters()
    found = find_residual_blocks(model)
    native = {adapter.default_scaling for _, _, _, adapter in found}
    options = resolve_depth_options(
        survival_rule, final_survival_prob, drop_mode, scaling, "inverted" if "inverted" in native else "paper"
    )
    if not found and options.survival_rule != "none":
        raise ValueError(
            f"no residual block found in {type(model).__name__}: stochastic depth needs residual blocks "
            "(this library's ResidualBlock, or a type registered with register_residual_adapter); "
            "use survival_rule='none' for constant depth"
        )
    sizes = [adapter.num_branches(child) for _, _, child, adapter in found]
    probs = survival_schedule(sum(sizes), options.survival_rule, options.final_survival_prob)
    gates = GateGenerator(gate_seed, probs, options.drop_mode, options.scaling)
    first = 0
    for (parent, name, child, adapter), size in zip(found, sizes):
        setattr(parent, name, adapter.make_stochastic(child, probs[first : first + size], first, gates))
        first += size
    model.gate_generator = gates
    model.depth_options = options.as_dict()
    return model


def _refuse_existing_drop_path(model: nn.Module) -> None:
    """Never stack two: a network built with its library's own drop path (a mask multiply) is refused."""
    for name, module in model.named_modules():
        kind = type(module).__name__
        rate = getattr(module, "drop_prob", None) if kind == "DropPath" else None
        rate = getattr(module, "p", None) if kind == "StochasticDepth" else rate
        if isinstance(rate, (int, float)) and rate > 0:
            raise ValueError(
                f"{type(model).__name__} already has {kind} {name!r} with rate {rate}: build it with a rate of zero "
                "(timm: drop_path_rate=0; torchvision: stochastic_depth_prob=0), then apply stochastic depth"
            )


def stochastic_blocks(model: nn.Module) -> Iterator[StochasticModule]:
    """The model's stochastic residual modules, in order."""
    return (module for module in model.modules() if isinstance(module, StochasticModule))


def survival_probs(model: nn.Module) -> list[float]:
    """p_l of every residual branch of ``model``, in order ([] for a network without any)."""
    return [prob for block in stochastic_blocks(model) for prob in block.survival_probs]


AFFINE_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.modules.conv._ConvNd, nn.Linear, nn.LayerNorm)


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


def fold_survival(model: nn.Module) -> nn.Module:
    """An evaluation-only copy of ``model`` with each p_l folded into its branch's weights.

    The weight and bias of each branch's last affine layer (a BatchNorm in post-activation
    families, the last convolution in pre-activation ones) are multiplied by p_l, which
    scales the branch's output by p_l exactly as eq. 5 of the paper does at test time,
    and each stochastic module becomes its plain counterpart. The result has no stochastic
    parts, costs what a plain network costs, and exports with ``torch.export``. The input
    model is not changed.
    """
    folded = copy.deepcopy(model).eval()
    stochastic = [
        (parent, name, child)
        for parent in folded.modules()
        for name, child in parent.named_children()
        if isinstance(child, StochasticModule)
    ]
    for parent, name, child in stochastic:
        setattr(parent, name, child.folded())
    folded.__dict__.pop("gate_generator", None)
    folded.__dict__.pop("depth_options", None)
    return folded


def gate_generator(model: nn.Module) -> GateGenerator:
    """The :class:`GateGenerator` that :func:`stochastic_depth` gave ``model``."""
    gates = getattr(model, "gate_generator", None)
    if not isinstance(gates, GateGenerator):
        raise ValueError("this model has no gate generator; build it with stochdepth.create_model")
    return gates


class IdleParameters:
    """Called after a training forward pass: the trainable parameters of the modules with a branch that did not run.

    They get no gradient from that step's backward pass. Data-parallel training needs them
    (``stochdepth.train.distributed``): PyTorch's DDP waits for a gradient of every
    parameter unless told otherwise, and the gates name the idle ones before backward, so
    no search of the autograd graph (``find_unused_parameters=True``) is needed. A branch
    that ran on no rows of this process's batch (sample mode) counts as idle. The modules
    and their parameters are listed once, here, so a step only reads its gates.
    """

    def __init__(self, model: nn.Module) -> None:
        gates = getattr(model, "gate_generator", None)
        self.gates = gates if isinstance(gates, GateGenerator) else None
        self.blocks = [
            (
                range(block.first_index, block.first_index + len(block.survival_probs)),
                [param for param in block.parameters() if param.requires_grad],
            )
            for block in stochastic_blocks(model)
        ]

    def __call__(self) -> list[nn.Parameter]:
        step = self.gates.step if self.gates is not None else None
        if step is None:
            return []
        return [
            param
            for branches, params in self.blocks
            if not all(step.survives[index] for index in branches)
            for param in params
        ]


def decay_dropped_blocks(optimizer: torch.optim.Optimizer) -> RemovableHandle:
    """Make ``optimizer`` apply weight decay and momentum to dropped blocks, as the paper's code did.

    A dropped block's branch does not run, so its parameters get no gradient; a ``None``
    gradient makes PyTorch's SGD skip the parameter (no weight decay, no momentum). Call this
    once, after building the optimizer, and clear gradients with
    ``optimizer.zero_grad(set_to_none=False)``: a step pre-hook gives a zero gradient to every
    trainable parameter whose gradient is ``None`` (the first step, or after a
    ``set_to_none=True``), after which gradients stay allocated and are only zeroed.
    Calling it again on the same optimizer returns the first handle (no second hook).
    """
    existing = getattr(optimizer, "_stochdepth_decay_hook", None)
    if existing is not None:
        return existing

    def give_zero_grads(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        for group in opt.param_groups:
            for param in group["params"]:
                if param.grad is None and param.requires_grad:
                    param.grad = torch.zeros_like(param)

    handle = optimizer.register_step_pre_hook(give_zero_grads)
    optimizer._stochdepth_decay_hook = handle
    return handle
