"""Survival schedules (Huang et al. 2016, section 3, eq. 4) and the resolved stochastic-depth options."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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
        return dataclasses.asdict(self)


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
    ``survival_rule="none"`` (constant depth) p_L is 1 whatever was given, and p_L = 1 under
    either rule *is* constant depth (every p_l is 1), so it resolves to ``"none"``: one
    network, one name, trained once in a sweep and used as its baseline.
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
    if final_survival_prob == 1.0:
        return DepthOptions("none", 1.0, drop_mode, scaling)
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
    return schedule_for(num_blocks, resolve_depth_options(survival_rule, final_survival_prob))


def schedule_for(num_blocks: int, options: DepthOptions) -> list[float]:
    """:func:`survival_schedule` of options already resolved (``resolve_depth_options``), used as they are."""
    if options.survival_rule == "none":
        return [1.0] * num_blocks
    if options.survival_rule == "uniform":
        return [options.final_survival_prob] * num_blocks
    return [1.0 - (block / num_blocks) * (1.0 - options.final_survival_prob) for block in range(1, num_blocks + 1)]
