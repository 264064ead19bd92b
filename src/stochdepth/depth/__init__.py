"""The stochastic-depth mechanism: survival schedules, gates, skipping and scaling.

Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016, section 3. This package is
the one place where the mechanism lives, and it knows no model family and no trainer:

- ``schedule``: the options, the survival probabilities p_l (eq. 4) and their time schedules;
- ``gates``: what a training step is, and the host-side generator of its gates;
- ``residual``: the residual sum of a stochastic block (skip, scale, zero gradients for
  what was skipped) and the registry of adapters;
- ``adapters``: torchvision's and timm's blocks, made stochastic in place;
- ``apply``: :func:`stochastic_depth`, :func:`fold_survival` and friends;
- ``batchnorm``: :func:`recalibrated_batchnorm`, BatchNorm statistics of the network evaluation runs.

Model families only declare :class:`ResidualBlock` parts; :func:`stochastic_depth` finds the
residual blocks of any network and turns each into a stochastic module.
"""

from stochdepth.depth.apply import (
    find_residual_blocks,
    fold_survival,
    gate_generator,
    gate_generators,
    keep_gate_state_in_state_dict,
    run_every_block,
    stochastic_blocks,
    stochastic_depth,
    survival_probs,
    survival_probs_in_force,
)
from stochdepth.depth.batchnorm import recalibrated_batchnorm
from stochdepth.depth.gates import GateGenerator, StepGates, survivor_counts
from stochdepth.depth.residual import (
    ResidualAdapter,
    ResidualBlock,
    StochasticModule,
    StochasticResidual,
    register_residual_adapter,
    scale_last_affine_layer,
    stochastic_residual,
)
from stochdepth.depth.schedule import (
    DROP_MODES,
    SCALINGS,
    SURVIVAL_RULES,
    TIME_SCHEDULES,
    DepthOptions,
    TimeSchedule,
    resolve_depth_options,
    survival_schedule,
    time_schedule_for,
)

__all__ = [
    "DROP_MODES",
    "SCALINGS",
    "SURVIVAL_RULES",
    "TIME_SCHEDULES",
    "DepthOptions",
    "GateGenerator",
    "ResidualAdapter",
    "ResidualBlock",
    "StepGates",
    "StochasticModule",
    "StochasticResidual",
    "TimeSchedule",
    "find_residual_blocks",
    "fold_survival",
    "gate_generator",
    "gate_generators",
    "keep_gate_state_in_state_dict",
    "recalibrated_batchnorm",
    "register_residual_adapter",
    "resolve_depth_options",
    "run_every_block",
    "scale_last_affine_layer",
    "stochastic_blocks",
    "stochastic_depth",
    "stochastic_residual",
    "survival_probs",
    "survival_probs_in_force",
    "survival_schedule",
    "survivor_counts",
    "time_schedule_for",
]
