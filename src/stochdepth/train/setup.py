"""Turning a configuration into a run: the resolved options, the device and the network.

:func:`resolve_config` is where the defaults of the model family and of the mechanism are
filled in, once, and checked against the registries; everything downstream (``config.json``,
sweep names, the report, ``eval``, ``export``) reads the resolved values.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from stochdepth.config import TrainConfig
from stochdepth.data import DATASETS, DataSpec
from stochdepth.models import create_model, model_info, resolve_model_depth_options


def resolve_config(config: TrainConfig) -> TrainConfig:
    """``config`` checked, with the stochastic-depth options resolved for its model (no ``None`` left there).

    Raises ``ValueError`` naming the first bad option, before anything is created or loaded.
    """
    config.check()
    if config.data.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {config.data.dataset!r}; choose one of {', '.join(DATASETS)}")
    model = config.model
    info = model_info(model.model)
    options = resolve_model_depth_options(model.model, model.survival_rule, model.final_survival_prob, model.drop_mode)
    if config.data.dataset == "imagenet" and config.data.image_size < info.min_image_size:
        raise ValueError(f"image_size must be at least {info.min_image_size} for {model.model}")
    resolved = dataclasses.replace(model, **options.as_dict())
    return dataclasses.replace(config, model=resolved)


def resolve_device(name: str | None) -> torch.device:
    """``name``, or CUDA when there is one, else the CPU; ``ValueError`` for a device this machine lacks."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported; use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device cuda asked for, but this machine has no usable CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def build_model(config: TrainConfig, spec: DataSpec, gate_seed: int = 0) -> nn.Module:
    """The network ``config.model`` describes, for data of ``spec``'s classes and channels."""
    model = config.model
    return create_model(
        model.model,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        survival_rule=model.survival_rule,
        final_survival_prob=model.final_survival_prob,
        drop_mode=model.drop_mode,
        dropout_rate=model.dropout_rate,
        gate_seed=gate_seed,
    )
