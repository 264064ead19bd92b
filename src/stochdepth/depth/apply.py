"""Applying the mechanism to a network: find its residual blocks, make them stochastic, fold them back."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import replace

import torch
from torch import nn

from stochdepth.depth.adapters import native_drop_rate, register_adapters
from stochdepth.depth.gates import GateGenerator, common_seed, data_parallel_position
from stochdepth.depth.residual import ResidualAdapter, StochasticModule, adapter_for
from stochdepth.depth.schedule import DepthOptions, resolve_depth_options, schedule_for, time_schedule_for


def _children_in_order(
    model: nn.Module, stop: Callable[[nn.Module], bool]
) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """(parent, name, child) in registration order, not descending into children where ``stop`` holds."""
    for name, child in model.named_children():
        yield model, name, child
        if not stop(child):
            yield from _children_in_order(child, stop)


def find_residual_blocks(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module, ResidualAdapter]]:
    """The residual blocks of ``model`` (declared ``ResidualBlock``\\ s and registered adapter types).

    Registration order, which every family in this library makes the forward order. A module
    of a registered type with no residual branch (an EfficientNet block without a skip), or
    whose ``forward`` was replaced on the instance (it computes something else), is left out.
    """

    def recognised(module: nn.Module) -> bool:
        return isinstance(module, StochasticModule) or adapter_for(module) is not None

    return [
        (parent, name, child, adapter_for(child))
        for parent, name, child in _children_in_order(model, recognised)
        if adapter_for(child) is not None
        and not isinstance(child, StochasticModule)
        and "forward" not in vars(child)
        and adapter_for(child).num_branches(child) > 0
    ]


def begin_gate_step(module: nn.Module, args: object) -> None:
    """The converted module's forward pre-hook: a training-mode call begins a step (``stochdepth.depth.gates``).

    In evaluation it does nothing, so ``torch.export`` of a converted network in evaluation
    mode traces through it.
    """
    if module.training:
        module.gate_generator.begin_step()


def stochastic_depth(
    model: nn.Module,
    survival_rule: str | None = None,
    final_survival_prob: float | None = None,
    drop_mode: str | None = None,
    gate_seed: int | None = None,
    scaling: str | None = None,
    *,
    time_schedule: str | None = None,
    time_schedule_fraction: float | None = None,
    total_steps: int | None = None,
    options: DepthOptions | None = None,
) -> nn.Module:
    """Give every residual branch of ``model`` its survival probability and gate; returns ``model``, changed in place.

    Branches are numbered l = 1..L in the order the model registers its blocks. The model
    gets a ``gate_generator`` attribute (a :class:`~stochdepth.depth.gates.GateGenerator`)
    shared by its blocks, a ``depth_options`` dict of the resolved options, and a forward
    pre-hook that begins a gate step at each training-mode call.

    A network built with its own drop path (timm's ``drop_path_rate``, torchvision's
    ``stochastic_depth_prob``) keeps its schedule: each branch's p_l is 1 minus the rate its
    own drop-path layer holds, exactly (``survival_rule`` is then ``"native"``, p_L the smallest
    p_l), and the converted block skips instead of multiplying by a mask. Both libraries ramp
    the rate linearly over the blocks, from 0 at the first block to the rate r at the last
    (timm's ResNets, ViTs, ConvNeXts and Swins, torchvision's ConvNeXts and Swins; torchvision's
    ResNets and ViTs have no drop path): p_l = 1 - r (l - 1) / (L - 1),
    the paper's eq. 4 with p_L = 1 - r but starting one block later (the first block never
    drops). EfficientNets (both libraries) stop one step short, p_l = 1 - r (l - 1) / L,
    counting all their blocks (those without a skip too). Giving ``survival_rule`` or
    ``final_survival_prob`` for such a
    network is a ``ValueError`` (build it with a rate of zero to choose another schedule).

    ``gate_seed`` defaults to ``torch.initial_seed()`` (what ``torch.manual_seed`` set), taken
    from rank 0 when ``torch.distributed`` is initialised (a broadcast: every rank converts), so
    every rank drops the same blocks even when each rank was seeded differently (timm's
    ``train.py`` does). A given ``gate_seed`` is used as it is, with no communication. ``scaling``
    defaults to the convention the blocks were trained with: ``"paper"`` for this library's
    blocks, ``"inverted"`` for torchvision's and timm's, so converting a trained network
    keeps its evaluation outputs. A model in which no residual block is recognised is a
    ``ValueError`` naming the block types it found, unless ``survival_rule`` is ``"none"``.

    ``time_schedule`` changes every branch's drop rate over training
    (:class:`~stochdepth.depth.schedule.TimeSchedule`: ``"constant"``, the default and the
    paper; ``"ramp"``, ``"late"``, ``"early"``, each changing at ``time_schedule_fraction`` of
    ``total_steps``, the number of training steps you plan; a step is a training-mode call of
    ``model``). :func:`survival_probs` keeps returning the schedule over depth;
    :func:`survival_probs_in_force` the probabilities at the current step.

    ``options``, instead of the six options above, are options already resolved
    (``create_model`` passes on what the configuration resolved once), used as they are.
    """
    if any(True for _ in stochastic_blocks(model)):
        raise ValueError("stochastic depth is already applied to this model")
    register_adapters()
    found = find_residual_blocks(model)
    sizes = [adapter.num_branches(child) for _, _, child, adapter in found]
    native_rates = [
        rate for (_, _, child, adapter), size in zip(found, sizes) for rate in _native_rates(child, adapter, size)
    ]
    native = {adapter.default_scaling for _, _, _, adapter in found}
    default_scaling = "inverted" if "inverted" in native else "paper"
    given = (survival_rule, final_survival_prob, drop_mode, scaling, time_schedule, time_schedule_fraction)
    if options is not None and any(value is not None for value in given):
        raise ValueError(
            "give either resolved options or survival_rule/final_survival_prob/drop_mode/scaling/time_schedule/"
            "time_schedule_fraction"
        )
    if any(native_rates):
        if survival_rule is not None or final_survival_prob is not None or options is not None:
            raise ValueError(
                f"{type(model).__name__} was built with its own drop-path rates (up to {max(native_rates):g}), which "
                "become the schedule: leave survival_rule and final_survival_prob unset, or build it with a rate of "
                "zero (timm: drop_path_rate=0; torchvision: stochastic_depth_prob=0) to choose another"
            )
        probs = [1.0 - rate for rate in native_rates]
        options = replace(
            resolve_depth_options(
                "uniform", min(probs), drop_mode, scaling, default_scaling, time_schedule, time_schedule_fraction
            ),
            survival_rule="native",
        )
    else:
        if options is None:
            options = resolve_depth_options(
                survival_rule,
                final_survival_prob,
                drop_mode,
                scaling,
                default_scaling,
                time_schedule,
                time_schedule_fraction,
            )
        probs = schedule_for(sum(sizes), options)
    schedule = time_schedule_for(options, total_steps)
    if not found and options.survival_rule != "none":
        raise ValueError(_no_blocks_message(model))
    _refuse_drop_path_outside(model)
    seed = common_seed(torch.initial_seed() & (2**63 - 1)) if gate_seed is None else gate_seed
    gates = GateGenerator(seed, probs, options.drop_mode, options.scaling, schedule)
    gates.agreed_across_ranks = gate_seed is not None or data_parallel_position()[1] > 1
    first = 0
    for (parent, name, child, adapter), size in zip(found, sizes):
        setattr(parent, name, adapter.make_stochastic(child, probs[first : first + size], first, gates))
        first += size
    model.gate_generator = gates
    model.depth_options = options.as_dict()
    model.register_forward_pre_hook(begin_gate_step)
    return model


def _native_rates(block: nn.Module, adapter: ResidualAdapter, size: int) -> list[float]:
    """Per branch of ``block``, the rate of its own drop-path layer (0 where it has none)."""
    rates = [native_drop_rate(module) for module in adapter.native_drop_paths(block)]
    return rates if rates else [0.0] * size


def _refuse_drop_path_outside(model: nn.Module) -> None:
    """Never stack two: a drop path with a non-zero rate that no recognised block owns is refused.

    A recognised block without a residual branch (an EfficientNet block without a skip) owns
    its drop path too: it never calls it.
    """
    owned = {
        id(drop_path)
        for module in model.modules()
        if (adapter := adapter_for(module)) is not None
        for drop_path in adapter.native_drop_paths(module)
        if drop_path is not None
    }
    for name, module in model.named_modules():
        rate = native_drop_rate(module)
        if rate > 0 and id(module) not in owned:
            raise ValueError(
                f"{type(model).__name__} has {type(module).__name__} {name!r} with rate {rate} in a block that is "
                "not recognised: build it with a rate of zero (timm: drop_path_rate=0; torchvision: "
                "stochastic_depth_prob=0), then apply stochastic depth"
            )


def _no_blocks_message(model: nn.Module) -> str:
    """Says that no residual block was recognised, naming the block-like module types that were found."""
    candidates = sorted(
        {
            type(module).__name__
            for module in model.modules()
            if any(word in type(module).__name__ for word in ("Block", "Residual", "Bottleneck"))
            or any(type(child).__name__ in ("DropPath", "StochasticDepth") for child in module.children())
        }
    )
    found = f"; found {', '.join(candidates)} (not recognised)" if candidates else ""
    return (
        f"no residual block found in {type(model).__name__}{found}: stochastic depth needs residual blocks (this "
        "library's ResidualBlock, or a type registered with register_residual_adapter); use survival_rule='none' "
        "for constant depth"
    )


def stochastic_blocks(model: nn.Module) -> Iterator[StochasticModule]:
    """The model's stochastic residual modules, in order."""
    return (module for module in model.modules() if isinstance(module, StochasticModule))


def survival_probs(model: nn.Module) -> list[float]:
    """p_l of every residual branch of ``model``, in order ([] for a network without any)."""
    return [prob for block in stochastic_blocks(model) for prob in block.survival_probs]


def survival_probs_in_force(model: nn.Module) -> list[float]:
    """p_l of every residual branch at the current step of ``model``'s time schedule, in order.

    The step being trained, or the last one trained (the first before any): what the gates
    are drawn with, what the inverted scaling divides by, and what evaluation under the
    paper's scaling (and :func:`fold_survival`) multiplies by. Equal to :func:`survival_probs`
    under the constant time schedule.
    """
    return [prob for block in stochastic_blocks(model) for prob in block.probs_in_force()]


def gate_generators(model: nn.Module) -> list[GateGenerator]:
    """The gate generators of the converted networks in ``model`` (itself, or one it wraps), in order found."""
    own = getattr(model, "gate_generator", None)
    found = [own] if isinstance(own, GateGenerator) else []
    for block in stochastic_blocks(model):
        if all(block.gates is not gates for gates in found):
            found.append(block.gates)
    return found


def gate_generator(model: nn.Module) -> GateGenerator:
    """The :class:`~stochdepth.depth.gates.GateGenerator` that :func:`stochastic_depth` gave ``model``.

    ``model`` may also be a module that wraps one converted network (DDP's module, a
    LightningModule, an ``AveragedModel``). Its ``state_dict()`` / ``load_state_dict()`` carry
    the gate sequence in a checkpoint of your own
    (``checkpoint["gates"] = gate_generator(model).state_dict()``); they are kept out of the
    model's ``state_dict`` so that the weights load into the plain network unchanged.
    """
    found = gate_generators(model)
    if not found:
        raise ValueError("this model has no gate generator; apply stochdepth.stochastic_depth to it first")
    if len(found) > 1:
        raise ValueError(
            f"this model holds {len(found)} converted networks, each with its own gate generator; pass the one you mean"
        )
    return found[0]


@contextlib.contextmanager
def run_every_block(model: nn.Module) -> Iterator[None]:
    """Within the block every residual branch runs, combined as in evaluation, even in training mode.

    For recalibrating BatchNorm statistics of the network that evaluation runs
    (``torch.optim.swa_utils.update_bn``, or a few training-mode passes under ``no_grad``):
    with blocks dropped, the BatchNorm layers inside dropped branches would see nothing.
    ``model`` is the network that runs, or anything that holds it: an ``AveragedModel``
    (its own copy, with its own gate generator), DDP's wrapper, a LightningModule; every
    converted network in it runs every block.
    """
    found = gate_generators(model)
    if not found:
        raise ValueError("this model holds no converted network; apply stochdepth.stochastic_depth to it first")
    with contextlib.ExitStack() as stack:
        for gates in found:
            stack.enter_context(gates.running_every_block())
        yield


class GateState(nn.Module):
    """A parameter-free child that carries a gate generator's state in its network's ``state_dict``.

    Added by :func:`keep_gate_state_in_state_dict`; its key is ``<name>._extra_state``.
    """

    def __init__(self, gates: GateGenerator) -> None:
        super().__init__()
        self.gates = gates

    def get_extra_state(self) -> dict[str, object]:
        return self.gates.state_dict()

    def set_extra_state(self, state: dict[str, object]) -> None:
        self.gates.load_state_dict(state)


def keep_gate_state_in_state_dict(model: nn.Module) -> nn.Module:
    """Make ``model.state_dict()`` carry the gate state (``stochdepth_gates._extra_state``); returns ``model``.

    For training code that checkpoints nothing but the model's ``state_dict`` and has no place
    for anything else (timm's ``train.py``, many users' loops): a run resumed from such a
    checkpoint then continues the gate sequence and the time schedule exactly. The weights then
    load into the plain network only with ``strict=False`` (or after :func:`fold_survival`,
    which leaves the gate state out).
    """
    model.stochdepth_gates = GateState(gate_generator(model))
    return model


def fold_survival(model: nn.Module) -> nn.Module:
    """An evaluation-only copy of ``model`` that is a plain network again.

    Under the paper's scaling the weight and bias of each branch's last affine layer (a
    BatchNorm in post-activation families, the last convolution in pre-activation ones) are
    multiplied by p_l (in force at the current step: :func:`survival_probs_in_force`), which
    scales the branch's output by p_l exactly as eq. 5 does at test time; under the inverted
    scaling evaluation is already the plain network. Each stochastic module becomes its plain
    counterpart (the original class for other libraries' blocks), so the result has no
    stochastic parts, costs what a plain network costs, and exports with ``torch.export``.
    The input model is not changed.
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
    for parent in list(folded.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, GateState):
                delattr(parent, name)
    folded.__dict__.pop("gate_generator", None)
    folded.__dict__.pop("depth_options", None)
    for key, hook in list(folded._forward_pre_hooks.items()):
        if hook is begin_gate_step:
            del folded._forward_pre_hooks[key]
    return folded
