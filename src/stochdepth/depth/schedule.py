"""Survival schedules over depth (Huang et al. 2016, section 3, eq. 4) and over training time, and the options.

The depth schedule gives each residual branch l its survival probability p_l. A time schedule
scales each branch's *drop rate* 1 - p_l by a factor m(t) in [0, 1] that depends on the
training step t alone, so the probability in force at step t is

    p_l(t) = 1 - m(t) (1 - p_l)

(:class:`TimeSchedule`). With ``"constant"`` (the paper, the default) m(t) = 1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

SURVIVAL_RULES = ("linear", "uniform", "exponential", "none")
DROP_MODES = ("batch", "sample", "subset")
ROW_MODES = ("sample", "subset")
"""The drop modes in which a branch runs on some rows of the batch (the others: all rows or none)."""
SCALINGS = ("paper", "inverted")
TIME_SCHEDULES = ("constant", "ramp", "late", "early")

DEFAULT_SURVIVAL_RULE = "linear"
DEFAULT_FINAL_SURVIVAL_PROB = 0.5
DEFAULT_DROP_MODE = "batch"
DEFAULT_SCALING = "paper"
MIN_FINAL_SURVIVAL_PROB = 1e-3
"""A smaller p_L would divide a branch by more than 1,000 under the inverted scaling: a typo, not a schedule."""
DEFAULT_TIME_SCHEDULE = "constant"
DEFAULT_TIME_SCHEDULE_FRACTION = 0.5


@dataclass(frozen=True)
class DepthOptions:
    """Resolved stochastic-depth options: no ``None`` left, constant depth has p_L = 1.

    ``time_schedule`` and ``time_schedule_fraction`` say how the drop rates change over
    training (:class:`TimeSchedule`; the number of steps it spans is the run's, given when the
    network is converted).
    """

    survival_rule: str
    final_survival_prob: float
    drop_mode: str
    scaling: str = DEFAULT_SCALING
    time_schedule: str = DEFAULT_TIME_SCHEDULE
    time_schedule_fraction: float = DEFAULT_TIME_SCHEDULE_FRACTION

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def resolve_depth_options(
    survival_rule: str | None = None,
    final_survival_prob: float | None = None,
    drop_mode: str | None = None,
    scaling: str | None = None,
    default_scaling: str = DEFAULT_SCALING,
    time_schedule: str | None = None,
    time_schedule_fraction: float | None = None,
) -> DepthOptions:
    """The options with this library's defaults filled in, checked; ``ValueError`` names what is allowed.

    Defaults: linear decay (eq. 4) to p_L = 0.5, batch mode, ``default_scaling`` (the paper's
    for this library's networks, inverted for torchvision's and timm's). With
    ``survival_rule="none"`` (constant depth) p_L is 1 whatever was given, and p_L = 1 under
    either rule *is* constant depth (every p_l is 1), so it resolves to ``"none"``: one
    network, one name, trained once in a sweep and used as its baseline; its time schedule is
    ``"constant"`` (there is nothing to schedule). ``time_schedule`` defaults to ``"constant"``
    and ``time_schedule_fraction`` to 0.5 (:class:`TimeSchedule`).
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
    time_schedule, time_schedule_fraction = _checked_time_options(time_schedule, time_schedule_fraction)
    if survival_rule == "none":
        return DepthOptions("none", 1.0, drop_mode, scaling)
    final_survival_prob = DEFAULT_FINAL_SURVIVAL_PROB if final_survival_prob is None else final_survival_prob
    if isinstance(final_survival_prob, bool) or not isinstance(final_survival_prob, (int, float)):
        raise ValueError(f"final_survival_prob must be a number in (0, 1], got {final_survival_prob!r}")
    if not MIN_FINAL_SURVIVAL_PROB <= final_survival_prob <= 1.0:
        raise ValueError(
            f"final_survival_prob must be in (0, 1] (at least {MIN_FINAL_SURVIVAL_PROB:g}), got {final_survival_prob}"
        )
    if final_survival_prob == 1.0:
        return DepthOptions("none", 1.0, drop_mode, scaling)
    return DepthOptions(
        survival_rule, float(final_survival_prob), drop_mode, scaling, time_schedule, time_schedule_fraction
    )


def _checked_time_options(time_schedule: str | None, time_schedule_fraction: float | None) -> tuple[str, float]:
    """The time schedule's name and fraction with defaults filled in; ``ValueError`` for bad ones."""
    time_schedule = DEFAULT_TIME_SCHEDULE if time_schedule is None else time_schedule
    fraction = DEFAULT_TIME_SCHEDULE_FRACTION if time_schedule_fraction is None else time_schedule_fraction
    if time_schedule not in TIME_SCHEDULES:
        raise ValueError(f"unknown time_schedule {time_schedule!r}; choose one of {', '.join(TIME_SCHEDULES)}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"time_schedule_fraction must be a number in [0, 1] (a fraction of the run), got {fraction!r}")
    return time_schedule, float(fraction)


@dataclass(frozen=True)
class TimeSchedule:
    """How the drop rates change over training: p_l(t) = 1 - m(t) (1 - p_l) at 0-based step t.

    With b = ``fraction`` * ``total_steps`` (the run's planned number of training steps):

    - ``"constant"``: m(t) = 1, the paper (``total_steps`` not needed);
    - ``"ramp"``: m(t) = min(1, t / b), the drop rate grows linearly from 0 to its full value
      at step b (composer's drop warm-up; DeepSpeed's progressive layer dropping);
    - ``"late"``: m(t) = 0 before step b, 1 from it on: no block is dropped in the first part
      of the run (Liu et al., ICML 2023, "Dropout Reduces Underfitting", late stochastic depth);
    - ``"early"``: m(t) = 1 before step b, 0 from it on (their early variant).

    A step beyond ``total_steps`` keeps the last value. Built by :func:`time_schedule_for`.
    """

    kind: str = DEFAULT_TIME_SCHEDULE
    fraction: float = DEFAULT_TIME_SCHEDULE_FRACTION
    total_steps: int | None = None

    @property
    def boundary(self) -> float:
        """b, the step where the schedule changes (0 for ``"constant"``)."""
        return 0.0 if self.kind == "constant" else self.fraction * self.total_steps

    def drop_factor(self, step: int) -> float:
        """m(t): the share of each branch's full drop rate in force at 0-based training step ``step``."""
        boundary = self.boundary
        if self.kind == "constant":
            return 1.0
        if self.kind == "ramp":
            return 1.0 if step >= boundary else step / boundary
        before = step < boundary
        return float(not before) if self.kind == "late" else float(before)

    def mean_drop_factor(self, start: int, stop: int) -> float:
        """The mean of m(t) over the steps ``start`` <= t < ``stop`` (1 for an empty range of a constant schedule).

        Without a loop over the steps: the count of steps on each side of b, and for the ramp
        the sum of t / b over the steps before b.
        """
        steps = stop - start
        if self.kind == "constant" or steps <= 0:
            return self.drop_factor(start)
        boundary = self.boundary
        first_full = min(max(math.ceil(boundary), start), stop)
        before = first_full - start
        after = steps - before
        if self.kind == "late":
            return after / steps
        if self.kind == "early":
            return before / steps
        ramp_sum = (start + first_full - 1) * before / 2 / boundary if before else 0.0
        return (ramp_sum + after) / steps


def time_schedule_for(options: DepthOptions, total_steps: int | None) -> TimeSchedule:
    """The time schedule ``options`` name over a run of ``total_steps`` training steps, checked.

    ``total_steps`` is needed (a positive integer) for every schedule but ``"constant"``.
    """
    if total_steps is not None and (
        isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0
    ):
        raise ValueError(f"total_steps must be a positive integer (the run's training steps), got {total_steps!r}")
    if options.time_schedule != "constant" and total_steps is None:
        raise ValueError(
            f"time_schedule {options.time_schedule!r} needs total_steps, the number of training steps of the run"
        )
    return TimeSchedule(options.time_schedule, options.time_schedule_fraction, total_steps)


def survival_probs_at(probs: list[float], schedule: TimeSchedule, step: int) -> list[float]:
    """The survival probability of each branch in force at ``step``: 1 - m(t) (1 - p_l)."""
    factor = schedule.drop_factor(step)
    return [1.0 - factor * (1.0 - prob) for prob in probs]


def survival_schedule(
    num_blocks: int,
    survival_rule: str = DEFAULT_SURVIVAL_RULE,
    final_survival_prob: float = DEFAULT_FINAL_SURVIVAL_PROB,
) -> list[float]:
    """Survival probability p_l of each residual block l = 1..L.

    ``"linear"``: p_l = 1 - (l / L) (1 - p_L), the paper's eq. 4 (so block 1 can be dropped
    too and block L survives with p_L). ``"uniform"``: p_l = p_L. ``"exponential"``: the drop
    rate rises exponentially over depth as in LayerSkip (Elhoushi et al., ACL 2024),
    p_l = 1 - (2^((l - 1) / (L - 1)) - 1) (1 - p_L): block 1 never drops, block L survives with
    p_L, and most of the dropping falls on the last blocks. ``"none"``: p_l = 1, the
    constant-depth baseline.
    """
    return schedule_for(num_blocks, resolve_depth_options(survival_rule, final_survival_prob))


def schedule_for(num_blocks: int, options: DepthOptions) -> list[float]:
    """:func:`survival_schedule` of options already resolved (``resolve_depth_options``), used as they are."""
    if options.survival_rule == "none":
        return [1.0] * num_blocks
    if options.survival_rule == "uniform":
        return [options.final_survival_prob] * num_blocks
    drop = 1.0 - options.final_survival_prob
    if options.survival_rule == "exponential":
        if num_blocks == 1:
            return [options.final_survival_prob]
        return [1.0 - (2.0 ** ((block - 1) / (num_blocks - 1)) - 1.0) * drop for block in range(1, num_blocks + 1)]
    return [1.0 - (block / num_blocks) * drop for block in range(1, num_blocks + 1)]
