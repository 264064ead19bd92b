"""Turning a configuration into a run: the resolved options, the device and the network.

:func:`resolve_config` is where the defaults of the model family and of the mechanism are
filled in, once, and checked against the registries; everything downstream (``config.json``,
sweep names, the report, ``eval``, ``export``) reads the resolved values.
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from pathlib import Path

import torch
from torch import nn

from stochdepth.config import TrainConfig
from stochdepth.data import DATASETS, DataSpec
from stochdepth.depth import DepthOptions
from stochdepth.models import create_model, model_info, resolve_model_depth_options


def resolve_config(config: TrainConfig) -> TrainConfig:
    """``config`` checked, with the stochastic-depth options resolved for its model (no ``None`` left there).

    Raises ``ValueError`` naming the first bad option, before anything is created or loaded.
    """
    config.check()
    if config.data.dataset not in DATASETS:
        close = difflib.get_close_matches(config.data.dataset, DATASETS, n=2)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown dataset {config.data.dataset!r}{hint}; choose one of {', '.join(DATASETS)}")
    model = config.model
    info = model_info(model.model)
    options = resolve_model_depth_options(
        model.model,
        model.survival_rule,
        model.final_survival_prob,
        model.drop_mode,
        model.scaling,
        model.time_schedule,
        model.time_schedule_fraction,
    )
    if config.data.dataset == "imagenet" and config.data.image_size < info.min_image_size:
        raise ValueError(f"image_size must be at least {info.min_image_size} for {model.model}")
    if config.run.sync_batchnorm and options.drop_mode == "sample":
        raise ValueError(
            "run.sync_batchnorm works with model.drop_mode batch or subset: in sample mode a rank whose rows all "
            "skip a block would not join that block's SyncBatchNorm"
        )
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


def depth_options_of(config: TrainConfig) -> DepthOptions:
    """The depth options of a resolved ``config`` (:func:`resolve_config`), as they are."""
    return DepthOptions(**{field.name: getattr(config.model, field.name) for field in dataclasses.fields(DepthOptions)})


def build_model(config: TrainConfig, spec: DataSpec, gate_seed: int = 0, total_steps: int | None = None) -> nn.Module:
    """The network ``config.model`` describes, for data of ``spec``'s classes, channels and image size.

    ``config`` is resolved (:func:`resolve_config`): its depth options are passed on as they are.
    ``total_steps``, the run's training steps, is what a time schedule spans.
    """
    model = config.model
    return create_model(
        model.model,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        depth_options=depth_options_of(config),
        dropout_rate=model.dropout_rate,
        gate_seed=gate_seed,
        image_size=spec.image_size,
        total_steps=total_steps,
    )


def load_initial_weights(model: nn.Module, path: str | Path) -> str:
    """Load the tensors of ``path`` that fit ``model`` (same key, same shape); returns a line saying what happened.

    ``path`` is a safetensors file or a state dict saved with ``torch.save`` (or a stochdepth checkpoint),
    read with ``weights_only=True``. Tensors that do not fit (a classifier for another number of
    classes) are left at their initialisation and named; a file of which nothing fits is an error.
    """
    path = Path(path)
    if not path.is_file():
        if path.is_symlink() and not path.exists():
            kind = "a symbolic link to nothing (or in a loop)"
        elif path.exists():
            kind = "not a regular file (a folder, device or pipe)"
        else:
            kind = "no such file"
        raise ValueError(f"model.init_weights {path}: {kind}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's paragraph on a refused file: the error says it in one line
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to read an untrusted file is the user's to fix
        raise ValueError(f"model.init_weights {path}: not readable as weights ({type(error).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"model.init_weights {path}: holds no state dict")
    own = model.state_dict()
    fitting = {
        key: value
        for key, value in state.items()
        if key in own and isinstance(value, torch.Tensor) and value.shape == own[key].shape
    }
    if not fitting:
        raise ValueError(f"model.init_weights {path}: no tensor fits {type(model).__name__}")
    model.load_state_dict(fitting, strict=False)
    left = sorted(set(own) - set(fitting))
    shown = ", ".join(left[:4]) + (" ..." if len(left) > 4 else "")
    kept = f"; kept new: {shown}" if left else ""
    return f"initial weights from {path}: {len(fitting)} of {len(own)} tensors{kept}"
