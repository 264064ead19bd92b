"""ImageNet (ILSVRC-2012) in torchvision's ``ImageFolder`` layout, for the paper's ImageNet run.

Expected layout: ``<data dir>/imagenet/train/<class>/*.JPEG`` and
``<data dir>/imagenet/val/<class>/*.JPEG`` (the official validation set sorted into class
folders). ImageNet has no labelled test set, so, as in the paper, 10 training images
per class (10,000) are held out for model selection and the official validation set is
reported as the test error. Training: random-resized crop and horizontal flip;
evaluation: resize to 8/7 of the crop size, centre crop. The normalisation constants
are estimated from a seeded sample of training images (``STATS_SAMPLE`` of them, centre
crops), not typed in.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from stochdepth.data.device_loader import EpochOrder
from stochdepth.data.readers import DataError
from stochdepth.data.splits import per_class_holdout

STATS_SAMPLE = 2000
VALIDATION_PER_CLASS = 10


def _eval_transform(image_size: int, mean: list[float] | None = None, std: list[float] | None = None):
    steps = [transforms.Resize(round(image_size * 8 / 7)), transforms.CenterCrop(image_size), transforms.ToTensor()]
    if mean is not None:
        steps.append(transforms.Normalize(mean, std))
    return transforms.Compose(steps)


def _folder(root: Path, part: str, transform: transforms.Compose) -> datasets.ImageFolder:
    folder = root / "imagenet" / part
    if not folder.is_dir():
        raise DataError(
            f"ImageNet not found: missing {folder}; put the ILSVRC-2012 images (from image-net.org, after "
            f"registering) in {root / 'imagenet'}/train/<class>/ and {root / 'imagenet'}/val/<class>/"
        )
    try:
        return datasets.ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, OSError) as error:
        raise DataError(f"{folder}: not a readable ImageFolder ({error})") from None


def _with_transform(folder: datasets.ImageFolder, transform: transforms.Compose) -> datasets.ImageFolder:
    """The same image list with another transform (scanning ImageNet's 1.28M files once is enough)."""
    copied = copy.copy(folder)
    copied.transform = transform
    return copied


class ImageFolderLoader:
    """Batches of an ImageFolder subset, decoded by worker processes, delivered on ``device``.

    Training loaders draw a new seeded order each epoch and can resume mid-epoch
    (:class:`~stochdepth.data.device_loader.EpochOrder`).
    """

    def __init__(self, dataset, batch_size: int, device: torch.device, shuffle: bool, workers: int, seed: int):
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.workers = workers
        self.epoch_order = EpochOrder(seed)

    def __len__(self) -> int:
        if self.shuffle and len(self.dataset) >= self.batch_size:
            return len(self.dataset) // self.batch_size
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.dataset)
        if self.shuffle:
            order = self.epoch_order.draw(lambda generator: torch.randperm(count, generator=generator))
        else:
            order = torch.arange(count)
        start = self.epoch_order.position * self.batch_size
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=order[start : len(self) * self.batch_size].tolist(),
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )
        batches = iter(loader)
        for _ in self.epoch_order.batches(len(self)):
            images, labels = next(batches)
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return self.epoch_order.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        self.epoch_order.load_state_dict(state)


def imagenet_loaders(
    root: Path,
    batch_size: int,
    device: torch.device,
    seed: int,
    split_seed: int,
    image_size: int,
    workers: int,
    train_size: int | None,
    eval_size: int | None,
) -> tuple[ImageFolderLoader, ImageFolderLoader, ImageFolderLoader, int]:
    """Training, validation (held out from train) and test (official val) loaders, and the class count."""
    plain_train = _folder(root, "train", _eval_transform(image_size))
    targets = torch.tensor(plain_train.targets)
    train_indices, val_indices = per_class_holdout(targets, VALIDATION_PER_CLASS, split_seed)
    train_indices, val_indices = train_indices[:train_size], val_indices[:eval_size]
    sample = train_indices[torch.randperm(len(train_indices), generator=torch.Generator().manual_seed(seed))]
    pixels = torch.stack([plain_train[index][0] for index in sample[:STATS_SAMPLE].tolist()])
    mean = pixels.mean(dim=(0, 2, 3)).tolist()
    std = pixels.std(dim=(0, 2, 3)).tolist()
    train_transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    eval_transform = _eval_transform(image_size, mean, std)
    train = _with_transform(plain_train, train_transform)
    validation = _with_transform(plain_train, eval_transform)
    test = _folder(root, "val", eval_transform)
    if test.classes != train.classes:
        raise DataError(f"{root / 'imagenet' / 'val'}: its class folders differ from train/'s")
    test_indices = list(range(len(test)))[:eval_size]
    return (
        ImageFolderLoader(Subset(train, train_indices.tolist()), batch_size, device, True, workers, seed),
        ImageFolderLoader(Subset(validation, val_indices.tolist()), 2 * batch_size, device, False, workers, seed),
        ImageFolderLoader(Subset(test, test_indices), 2 * batch_size, device, False, workers, seed),
        len(train.classes),
    )
