"""stochdepth: train very deep residual networks with stochastic depth (Huang et al., ECCV 2016).

Train short, test deep: during training each residual block is skipped (its branch not
computed) with probability 1 - p_l; at test time the whole network runs with each
branch scaled by p_l.

The public names are imported on first use, so ``stochdepth --help`` does not pay for
importing PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "create_model": "stochdepth.models",
    "list_models": "stochdepth.models",
    "load_exported": "stochdepth.export",
    "fold_survival": "stochdepth.depth",
    "gate_generator": "stochdepth.depth",
    "keep_gate_state_in_state_dict": "stochdepth.depth",
    "recalibrated_batchnorm": "stochdepth.depth",
    "register_residual_adapter": "stochdepth.depth",
    "run_every_block": "stochdepth.depth",
    "stochastic_depth": "stochdepth.depth",
    "survival_probs": "stochdepth.depth",
    "survival_probs_in_force": "stochdepth.depth",
    "survival_schedule": "stochdepth.depth",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'stochdepth' has no attribute {name!r}")
