"""Run configuration: one dataclass per concern, composed into :class:`TrainConfig`.

A preset (``stochdepth.train.recipes``) fills these in; command-line flags override single
fields (each field is the flag of the same name, ``final_survival_prob`` ->
``--final-survival-prob``); the resolved configuration is written to the run folder's
``config.json`` and is all that is needed to resume. Fields left ``None`` take the
model family's or the library's defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PRECISIONS = ("fp32", "bf16")
EXPORT_FORMATS = ("safetensors", "torchscript", "exported", "onnx")
SWEEP_OPTIONS = ("model", "survival_rule", "final_survival_prob", "drop_mode", "seed")
"""The options a sweep may vary, each given several values (the axes of the paper's Fig. 8)."""
NONFINITE_ACTIONS = ("stop", "skip")


def _option(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class ModelConfig:
    """Which network, and its stochastic-depth settings (Huang et al. 2016, section 3)."""

    model: str = _option("resnet110", "registered model name (stochdepth list)")
    survival_rule: str | None = _option(None, "linear (eq. 4), uniform or none (constant depth)")
    final_survival_prob: float | None = _option(None, "p_L, the last block's survival probability, in (0, 1]")
    drop_mode: str | None = _option(None, "batch (one gate per block per mini-batch, the paper) or sample")
    dropout_rate: float | None = _option(None, "dropout between the convolutions (Wide ResNets)")


@dataclass
class DataConfig:
    """Which data, where it lives, and how much of it to use."""

    dataset: str = _option("fashion-mnist", "cifar10, cifar100, svhn, fashion-mnist or imagenet")
    data_dir: str | None = _option(None, "where data lives (default: $STOCHDEPTH_DATA, else ./data)")
    download: bool = _option(False, "download missing data sets (verifying their MD5s)")
    train_size: int | None = _option(None, "use the first N training images after the split")
    eval_size: int | None = _option(None, "use the first N images of validation and of test")
    split_seed: int = _option(0, "seed of the train/validation split (fixed across runs, as in the paper)")
    augment: bool = _option(True, "the data set's training augmentation (translation and flips; off: none)")
    image_size: int = _option(224, "ImageNet crop size")
    workers: int = _option(8, "ImageNet decoding processes")


@dataclass
class OptimConfig:
    """SGD and its learning-rate schedule (milestones are fractions of the epochs)."""

    epochs: int = _option(500, "training epochs")
    batch_size: int = _option(128, "mini-batch size")
    lr: float = _option(0.1, "learning rate after warm-up, before the first drop")
    momentum: float = _option(0.9, "SGD momentum (Nesterov, dampening 0)")
    weight_decay: float = _option(1e-4, "L2 weight decay")
    lr_milestones: tuple[float, ...] = _option((0.5, 0.75), "fractions of the epochs where the lr drops")
    lr_decay: float = _option(0.1, "factor applied to the lr at each milestone")
    warmup_epochs: int = _option(0, "epochs at --warmup-lr before the lr goes to --lr")
    warmup_lr: float = _option(0.01, "learning rate during warm-up")


@dataclass
class RunConfig:
    """Where the run goes, its seed, device and numerics, and how often it evaluates."""

    out: str | None = _option(None, "run folder (config.json, metrics.jsonl, summary.json, checkpoints/)")
    seed: int = _option(0, "seeds model initialisation, data order, augmentation and gates")
    device: str | None = _option(None, "cpu, cuda, cuda:1, ... (default: cuda if available)")
    precision: str = _option("fp32", "fp32 or bf16 (autocast)")
    channels_last: bool = _option(False, "channels-last memory format (CUDA)")
    compile: bool = _option(False, "torch.compile the block branches (not the gate logic)")
    eval_every_iters: int | None = _option(None, "evaluate every K iterations instead of every epoch")
    checkpoint_every_minutes: float | None = _option(
        None, "also write checkpoints/last.pt every M minutes inside an epoch (long epochs: ImageNet)"
    )
    on_nonfinite: str = _option("stop", "on a non-finite loss or gradient: stop, or skip the step")
    record_gradients_every: int | None = _option(
        None, "record mean |gradient| of the stem and each block's first convolution every N iterations"
    )


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def check(self) -> None:
        """Raise ``ValueError`` naming the first option whose value cannot work.

        Only what this module can judge alone (types and ranges); the model's and the data
        set's names and the stochastic-depth options are checked where their registries
        live, when the run is resolved (``stochdepth.train.setup.resolve_config``).
        """
        positive = {
            "epochs": self.optim.epochs,
            "batch_size": self.optim.batch_size,
            "lr": self.optim.lr,
            "image_size": self.data.image_size,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        counts = {
            "train_size": self.data.train_size,
            "eval_size": self.data.eval_size,
            "eval_every_iters": self.run.eval_every_iters,
            "record_gradients_every": self.run.record_gradients_every,
        }
        for name, value in counts.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        numbers = (self.optim.momentum, self.optim.weight_decay, self.optim.lr_decay, self.optim.warmup_lr)
        if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in numbers):
            raise ValueError("momentum, weight_decay, lr_decay and warmup_lr must be numbers")
        if not 0 <= self.optim.momentum < 1 or self.optim.weight_decay < 0:
            raise ValueError("momentum must be in [0, 1) and weight_decay >= 0")
        if self.run.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.run.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.run.on_nonfinite not in NONFINITE_ACTIONS:
            raise ValueError(
                f"unknown on_nonfinite {self.run.on_nonfinite!r}; choose one of {', '.join(NONFINITE_ACTIONS)}"
            )
        minutes = self.run.checkpoint_every_minutes
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes < 0):
            raise ValueError(f"checkpoint_every_minutes must be a number >= 0, got {minutes!r}")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild a configuration from :meth:`to_dict`'s output; unknown keys are a ``ValueError``."""
        if not isinstance(values, dict):
            raise ValueError("configuration must be a JSON object")
        sections = {}
        for section in dataclasses.fields(cls):
            section_type = type(getattr(cls(), section.name))
            given = values.get(section.name, {})
            if not isinstance(given, dict):
                raise ValueError(f"configuration section {section.name!r} must be an object")
            known = {option.name for option in dataclasses.fields(section_type)}
            unknown = sorted(set(given) - known)
            if unknown:
                raise ValueError(f"unknown option(s) in section {section.name!r}: {', '.join(unknown)}")
            if "lr_milestones" in given and given["lr_milestones"] is not None:
                given = {**given, "lr_milestones": tuple(given["lr_milestones"])}
            sections[section.name] = section_type(**given)
        return cls(**sections)

    def override(self, **options: Any) -> TrainConfig:
        """A copy with the named fields replaced (any section); ``None`` values are ignored."""
        sections = {section.name: getattr(self, section.name) for section in dataclasses.fields(self)}
        for name, value in options.items():
            if value is None:
                continue
            owner = next(
                (key for key, part in sections.items() if name in {f.name for f in dataclasses.fields(part)}), None
            )
            if owner is None:
                raise ValueError(f"unknown option {name!r}")
            sections[owner] = dataclasses.replace(sections[owner], **{name: value})
        return TrainConfig(**sections)


def option_fields() -> list[tuple[str, dataclasses.Field]]:
    """Every (section, field) of :class:`TrainConfig`, for building command-line flags."""
    config = TrainConfig()
    return [
        (section.name, option)
        for section in dataclasses.fields(config)
        for option in dataclasses.fields(getattr(config, section.name))
    ]
