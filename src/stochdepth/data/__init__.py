"""Data: readers for the standard formats, the paper's splits, loaders that feed the device.

:func:`build_loaders` is the one entry point the trainer uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from stochdepth.config import DataConfig
from stochdepth.data.device_loader import DeviceLoader, channel_stats
from stochdepth.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, imagenet_loaders
from stochdepth.data.readers import DataError
from stochdepth.data.shard import WHOLE, Shard
from stochdepth.data.small_images import SMALL_IMAGE_DATASETS, DataMissing, ImageSplits, data_roots

DATASETS = (*SMALL_IMAGE_DATASETS, "imagenet")

__all__ = ["DATASETS", "DataError", "DataSpec", "Loaders", "Shard", "build_loaders"]


@dataclass(frozen=True)
class DataSpec:
    """What a network trained on a data set expects: the shape, the classes and the normalisation.

    ``mean`` and ``std`` are per channel on the [0, 1] scale (computed from the training
    split for the small-image sets, torchvision's fixed constants for ImageNet): an input
    image scaled to [0, 1] is normalised as ``(image - mean) / std``. Saved in ``config.json``
    and in every checkpoint, and built into exported networks.
    """

    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, values: object) -> DataSpec:
        """Rebuild (and check) a spec read from a file; ``ValueError`` says what is wrong."""
        if not isinstance(values, dict):
            raise ValueError("data_spec must be an object")
        try:
            counts = [values[key] for key in ("num_classes", "in_channels", "image_size")]
            mean, std = values["mean"], values["std"]
        except KeyError as error:
            raise ValueError(f"data_spec lacks {error.args[0]!r}") from None
        if any(isinstance(value, bool) or not isinstance(value, int) for value in counts):
            raise ValueError("data_spec's num_classes, in_channels and image_size must be integers")
        num_classes, in_channels, image_size = counts
        if not (2 <= num_classes <= MAX_CLASSES and 1 <= in_channels <= 64 and 1 <= image_size <= 4096):
            raise ValueError(f"data_spec out of range: {num_classes} classes, {in_channels} channels, {image_size} px")
        numbers = (list, tuple)
        if not (isinstance(mean, numbers) and isinstance(std, numbers) and len(mean) == len(std) == in_channels):
            raise ValueError("data_spec's mean and std must list one number per channel")

        def within(value: object, low: float, high: float) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high

        if not all(within(v, -1e3, 1e3) for v in mean) or not all(within(v, 1e-6, 1e3) for v in std):
            raise ValueError("data_spec's mean must be numbers in [-1000, 1000] and std numbers in [1e-6, 1000]")
        return cls(num_classes, in_channels, image_size, tuple(map(float, mean)), tuple(map(float, std)))


MAX_CLASSES = 32_768
"""More classes than any data set this library reads or ImageNet-21k's 21,843: a larger count in a file is an error."""


@dataclass
class Loaders:
    """Training, validation and test batches, the spec of the data they hold, and BatchNorm recalibration's batches.

    ``recalibration`` (``None`` unless asked for) is the first training images without
    augmentation, in order, in batches of the global batch size, whole on every process: what
    :func:`~stochdepth.depth.recalibrated_batchnorm` computes statistics over.
    """

    train: object
    val: object
    test: object
    spec: DataSpec
    recalibration: object | None = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.train.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.train.load_state_dict(state)


def _first_found(config: DataConfig, roots: list[Path]) -> ImageSplits:
    """The data set from the first root that holds it (downloading only into the first, when asked)."""
    for root in roots[1:]:
        try:
            return SMALL_IMAGE_DATASETS[config.dataset](root, False, config.split_seed)
        except DataMissing:
            continue
    return SMALL_IMAGE_DATASETS[config.dataset](roots[0], config.download, config.split_seed)


def build_loaders(
    config: DataConfig,
    batch_size: int,
    device: torch.device,
    seed: int,
    shard: Shard = WHOLE,
    recalibration_size: int | None = None,
) -> Loaders:
    """Loaders for ``config.dataset`` with the paper's split; raises :class:`DataError` if data is missing.

    ``batch_size`` is the global batch; with a ``shard`` (data-parallel training) the
    loaders yield this process's rows of every training batch and its part of the
    validation and test sets (:class:`~stochdepth.data.shard.Shard`). ``recalibration_size``
    asks for :attr:`Loaders.recalibration` over that many training images.
    """
    if config.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)}")
    roots = data_roots(config.data_dir)
    if config.dataset == "imagenet":
        root = roots[0]
        train, val, test, recalibration, num_classes = imagenet_loaders(
            root,
            batch_size,
            device,
            seed,
            config.split_seed,
            config.image_size,
            config.workers,
            config.train_size,
            config.eval_size,
            config.augment,
            shard,
            recalibration_size,
        )
        spec = DataSpec(num_classes, 3, config.image_size, IMAGENET_MEAN, IMAGENET_STD)
        return Loaders(train, val, test, spec, recalibration)
    splits = _first_found(config, roots)
    train_images = splits.train_images[: config.train_size]
    train_labels = splits.train_labels[: config.train_size]
    mean, std = channel_stats(train_images)
    spec = DataSpec(
        splits.num_classes, train_images.shape[1], train_images.shape[-1], tuple(mean.tolist()), tuple(std.tolist())
    )

    def loader(images: torch.Tensor, labels: torch.Tensor, **training: object) -> DeviceLoader:
        return DeviceLoader(images, labels, batch_size, mean, std, device, seed=seed, **training)

    def evaluation(images: torch.Tensor, labels: torch.Tensor) -> DeviceLoader:
        rows = shard.rows(len(labels[: config.eval_size]))
        return loader(images[: config.eval_size][rows], labels[: config.eval_size][rows])

    return Loaders(
        train=loader(
            train_images,
            train_labels,
            shuffle=True,
            max_translation=splits.max_translation if config.augment else 0,
            horizontal_flip=splits.horizontal_flip and config.augment,
            shard=shard,
        ),
        val=evaluation(splits.val_images, splits.val_labels),
        test=evaluation(splits.test_images, splits.test_labels),
        spec=spec,
        recalibration=None
        if recalibration_size is None
        else loader(train_images[:recalibration_size], train_labels[:recalibration_size]),
    )
