"""Training: the paper's recipes, the trainer, checkpoints and run folders.

The public names are imported on first use (the command line reads the recipes without
importing PyTorch).
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "TrainConfig": "stochdepth.config",
    "list_presets": "stochdepth.train.recipes",
    "preset": "stochdepth.train.recipes",
    "load_trained_model": "stochdepth.train.api",
    "evaluate_test_set": "stochdepth.train.api",
    "resume": "stochdepth.train.api",
    "train": "stochdepth.train.api",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'stochdepth.train' has no attribute {name!r}")
