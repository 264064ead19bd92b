"""Run configuration: one dataclass per concern, composed into :class:`TrainConfig`.

A preset (``stochdepth.train.recipes``) fills these in; command-line flags override single
fields (each field is the flag of the same name, ``final_survival_prob`` ->
``--final-survival-prob``); the resolved configuration is written to the run folder's
``config.json`` and is all that is needed to resume. Fields left ``None`` take the
model family's or the library's defaults.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

PRECISIONS = ("fp32", "bf16")
EXPORT_FORMATS = ("safetensors", "torchscript", "exported", "onnx")
SWEEP_OPTIONS = ("model", "survival_rule", "final_survival_prob", "drop_mode", "scaling", "seed")
"""The options a sweep may vary, each given several values (the axes of the paper's Fig. 8)."""
NONFINITE_ACTIONS = ("stop", "skip")


MIN_POSITIVE = 1e-12
MAX_LEARNING_RATE = 10.0
"""No SGD recipe in this field goes near it; a larger value is a typo (1e300 once overflowed)."""


def _text(name: str, value: Any, optional: bool = False) -> None:
    if (value is None and optional) or isinstance(value, str):
        return
    raise ValueError(f"{name} must be text, got {value!r}")


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def _integer(name: str, value: Any, low: int, high: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def _number(name: str, value: Any, low: float, high: float, optional: bool = False) -> None:
    """A finite number in [low, high] (NaN and infinities refused)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value!r}")


def _option(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class ModelConfig:
    """Which network, and its stochastic-depth settings (Huang et al. 2016, section 3)."""

    model: str = _option("resnet110", "registered model name (stochdepth list)")
    survival_rule: str | None = _option(
        None,
        "linear (eq. 4), uniform, exponential (LayerSkip's rise over depth) or none (constant depth); default: linear",
    )
    final_survival_prob: float | None = _option(
        None, "p_L, the last block's survival probability, in (0, 1]; 1 is constant depth; default: 0.5"
    )
    drop_mode: str | None = _option(
        None,
        "batch (one gate per block per mini-batch, the paper), sample (per-sample gates) or subset (a fixed "
        "round(p_l * batch) rows per block); default: batch",
    )
    scaling: str | None = _option(
        None,
        "paper (evaluation multiplies each branch by p_l, eq. 5) or inverted (training divides by p_l); "
        "default: paper for this library's models, inverted for torchvision/ and timm/ ones",
    )
    time_schedule: str | None = _option(
        None,
        "how the drop rates change over training: constant (the paper), ramp (from 0 to full at the fraction), "
        "late (no dropping before the fraction) or early (none after it); default: constant",
    )
    time_schedule_fraction: float | None = _option(
        None, "the fraction of the run's steps where the time schedule changes, in [0, 1]; default: 0.5"
    )
    dropout_rate: float | None = _option(None, "dropout between the convolutions (Wide ResNets)")
    init_weights: str | None = _option(
        None, "start from these weights (safetensors, or a weights-only checkpoint): fine-tuning"
    )


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
    """SGD and its learning-rate schedule (milestones are fractions of the run, stepped by iteration)."""

    epochs: int = _option(500, "training epochs")
    batch_size: int = _option(128, "mini-batch size")
    lr: float = _option(0.1, "learning rate after warm-up, before the first drop")
    momentum: float = _option(0.9, "SGD momentum (Nesterov, dampening 0)")
    weight_decay: float = _option(1e-4, "L2 weight decay")
    lr_milestones: tuple[float, ...] = _option((0.5, 0.75), "fractions of the run (its iterations) where the lr drops")
    lr_decay: float = _option(0.1, "factor applied to the lr at each milestone")
    warmup_epochs: int = _option(0, "epochs at --warmup-lr before the lr goes to --lr")
    warmup_lr: float = _option(0.01, "learning rate during warm-up")


@dataclass
class RunConfig:
    """Where the run goes, its seed, device and numerics, and how often it evaluates."""

    out: str | None = _option(
        None,
        "run folder (config.json, metrics.jsonl, summary.json, checkpoints/); "
        "default: runs/<preset or model>-<dataset>",
    )
    seed: int = _option(0, "seeds model initialisation, data order, augmentation and gates")
    device: str | None = _option(None, "cpu, cuda, cuda:1, ... (default: cuda if available)")
    precision: str = _option("fp32", "fp32 or bf16 (autocast)")
    channels_last: bool = _option(False, "channels-last memory format (CUDA)")
    compile: bool = _option(False, "torch.compile the model (the gate logic runs eagerly, the branches compiled)")
    sync_batchnorm: bool = _option(
        False, "under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm; CUDA, batch drop mode)"
    )
    eval_every_iters: int | None = _option(None, "evaluate every K iterations instead of every epoch")
    test_every_eval: bool = _option(
        True, "evaluate the test set at every evaluation (off: once, at the end, with the best-validation weights)"
    )
    recalibrate_batchnorm: int | None = _option(
        None,
        "before each evaluation, recompute BatchNorm statistics over the first N training images (no augmentation) "
        "with every block running, as evaluation runs them; best.pt keeps those statistics, training is unchanged "
        "(default: off, as in the paper)",
    )
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
        model, data, optim, run = self.model, self.data, self.optim, self.run
        _text("model", model.model)
        _text("init_weights", model.init_weights, optional=True)
        _text("dataset", data.dataset)
        for name, value in (
            ("survival_rule", model.survival_rule),
            ("drop_mode", model.drop_mode),
            ("scaling", model.scaling),
            ("time_schedule", model.time_schedule),
        ):
            _text(name, value, optional=True)
        for name, value in (("data.data_dir", data.data_dir), ("run.out", run.out), ("run.device", run.device)):
            _text(name.split(".")[1], value, optional=True)
            if value == "":
                raise ValueError(f"{name} must not be empty (give a value, or leave it unset)")
        for name, value in (("download", data.download), ("augment", data.augment)):
            _flag(name, value)
        _flag("channels_last", run.channels_last)
        _flag("compile", run.compile)
        _flag("sync_batchnorm", run.sync_batchnorm)
        _flag("test_every_eval", run.test_every_eval)
        _integer("epochs", optim.epochs, 1, 1_000_000)
        _integer("batch_size", optim.batch_size, 1, 1_000_000)
        _integer("image_size", data.image_size, 1, 4096)
        _integer("workers", data.workers, 0, 1024)
        _integer("seed", run.seed, 0, 2**63 - 1)
        _integer("split_seed", data.split_seed, 0, 2**63 - 1)
        _integer("warmup_epochs", optim.warmup_epochs, 0, 1_000_000)
        for name, value in (
            ("train_size", data.train_size),
            ("eval_size", data.eval_size),
            ("eval_every_iters", run.eval_every_iters),
            ("record_gradients_every", run.record_gradients_every),
            ("recalibrate_batchnorm", run.recalibrate_batchnorm),
        ):
            _integer(name, value, 1, 10**12, optional=True)
        _number("dropout_rate", model.dropout_rate, 0.0, 0.999, optional=True)
        _number("time_schedule_fraction", model.time_schedule_fraction, 0.0, 1.0, optional=True)
        _number("lr", optim.lr, MIN_POSITIVE, MAX_LEARNING_RATE)
        _number("warmup_lr", optim.warmup_lr, MIN_POSITIVE, MAX_LEARNING_RATE)
        _number("lr_decay", optim.lr_decay, MIN_POSITIVE, 1.0)
        _number("momentum", optim.momentum, 0.0, 0.999)
        _number("weight_decay", optim.weight_decay, 0.0, 1.0)
        _number("checkpoint_every_minutes", run.checkpoint_every_minutes, 0.0, 10**6, optional=True)
        if not isinstance(optim.lr_milestones, tuple) or len(optim.lr_milestones) > 100:
            raise ValueError(f"lr_milestones must be a list of fractions of the run, got {optim.lr_milestones!r}")
        for fraction in optim.lr_milestones:
            _number("each of lr_milestones (a fraction of the run)", fraction, 0.0, 1.0)
        if run.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {run.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if run.on_nonfinite not in NONFINITE_ACTIONS:
            raise ValueError(f"unknown on_nonfinite {run.on_nonfinite!r}; choose one of {', '.join(NONFINITE_ACTIONS)}")

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
