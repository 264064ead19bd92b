"""Data: readers for the standard formats, the paper's splits, loaders that feed the device.

:func:`build_loaders` is the one entry point the trainer uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stochdepth.config import DataConfig
from stochdepth.data.device_loader import DeviceLoader, channel_stats
from stochdepth.data.imagenet import imagenet_loaders
from stochdepth.data.readers import DataError
from stochdepth.data.small_images import SMALL_IMAGE_DATASETS, data_root

DATASETS = (*SMALL_IMAGE_DATASETS, "imagenet")

__all__ = ["DATASETS", "DataError", "Loaders", "build_loaders"]


@dataclass
class Loaders:
    """Training, validation and test batches, and the shape of the data they hold."""

    train: object
    val: object
    test: object
    num_classes: int
    in_channels: int
    image_size: int

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.train.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.train.load_state_dict(state)


def build_loaders(config: DataConfig, batch_size: int, device: torch.device, seed: int) -> Loaders:
    """Loaders for ``config.dataset`` with the paper's split; raises :class:`DataError` if data is missing."""
    if config.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)}")
    root = data_root(config.data_dir)
    if config.dataset == "imagenet":
        train, val, test, num_classes = imagenet_loaders(
            root,
            batch_size,
            device,
            seed,
            config.split_seed,
            config.image_size,
            config.workers,
            config.train_size,
            config.eval_size,
        )
        return Loaders(train, val, test, num_classes, 3, config.image_size)
    splits = SMALL_IMAGE_DATASETS[config.dataset](root, config.download, config.split_seed)
    train_images = splits.train_images[: config.train_size]
    train_labels = splits.train_labels[: config.train_size]
    mean, std = channel_stats(train_images)

    def loader(images: torch.Tensor, labels: torch.Tensor, **training: object) -> DeviceLoader:
        return DeviceLoader(images, labels, batch_size, mean, std, device, seed=seed, **training)

    eval_size = config.eval_size
    return Loaders(
        train=loader(
            train_images,
            train_labels,
            shuffle=True,
            max_translation=splits.max_translation if config.augment else 0,
            horizontal_flip=splits.horizontal_flip and config.augment,
        ),
        val=loader(splits.val_images[:eval_size], splits.val_labels[:eval_size]),
        test=loader(splits.test_images[:eval_size], splits.test_labels[:eval_size]),
        num_classes=splits.num_classes,
        in_channels=train_images.shape[1],
        image_size=train_images.shape[-1],
    )
