"""ImageNet (ILSVRC-2012) in torchvision's ``ImageFolder`` layout, for the paper's ImageNet run.

Expected layout: ``<data dir>/imagenet/train/<class>/*.JPEG`` and
``<data dir>/imagenet/val/<class>/*.JPEG`` (the official validation set sorted into class
folders). ImageNet has no labelled test set, so, as in the paper, 10 training images
per class (10,000) are held out for model selection and the official validation set is
reported as the test error. Training, as fb.resnet.torch (the code the paper's ImageNet
runs build on): random-resized crop, colour jitter (brightness, contrast and saturation,
0.4 each), AlexNet-style lighting noise (PCA of ImageNet's RGB values, standard deviation
0.1) and horizontal flip. Evaluation: resize to 8/7 of the crop size, centre crop. The
normalisation constants are the standard ImageNet ones that torchvision's pretrained
networks use, so those networks' weights and ours see the same inputs.
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
from stochdepth.data.shard import WHOLE, Shard
from stochdepth.data.splits import per_class_holdout

VALIDATION_PER_CLASS = 10
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LIGHTING_STD = 0.1
LIGHTING_EIGENVALUES = (0.2175, 0.0188, 0.0045)
LIGHTING_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


class Lighting:
    """AlexNet's lighting noise: add ``eigenvectors @ (alpha * eigenvalues)``, alpha ~ N(0, std), to every pixel.

    Krizhevsky et al. 2012, section 4.1, with fb.resnet.torch's ImageNet eigen-decomposition;
    works on a (3, H, W) tensor in [0, 1].
    """

    def __init__(self, std: float = LIGHTING_STD) -> None:
        self.std = std
        self.eigenvalues = torch.tensor(LIGHTING_EIGENVALUES)
        self.eigenvectors = torch.tensor(LIGHTING_EIGENVECTORS)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        return image + (self.eigenvectors @ (alpha * self.eigenvalues)).view(3, 1, 1)

    def __repr__(self) -> str:
        return f"Lighting(std={self.std})"


def train_transform(image_size: int, augment: bool) -> transforms.Compose:
    """fb.resnet.torch's training augmentation (module docstring), or the evaluation transform without it."""
    if not augment:
        return _eval_transform(image_size)
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
            transforms.ToTensor(),
            Lighting(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            transforms.RandomHorizontalFlip(),
        ]
    )


def _eval_transform(image_size: int) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(round(image_size * 8 / 7)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


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
    (:class:`~stochdepth.data.device_loader.EpochOrder`). With a ``shard`` (data-parallel
    training) every process draws the same order and decodes only its rows of each global
    batch of ``batch_size``: what ``DistributedSampler`` with ``set_epoch`` does, with the
    batches of all processes together equal to the single-process batch.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        device: torch.device,
        shuffle: bool,
        workers: int,
        seed: int,
        shard: Shard = WHOLE,
    ):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shard = shard
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
        batches = order[start : len(self) * self.batch_size].split(self.batch_size)
        mine = [batch[self.shard.rows(len(batch))] for batch in batches]
        loader = DataLoader(
            self.dataset,
            batch_sampler=[batch.tolist() for batch in mine],
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )
        loaded = iter(loader)
        for _ in self.epoch_order.batches(len(self)):
            images, labels = next(loaded)
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
    augment: bool = True,
    shard: Shard = WHOLE,
    recalibration_size: int | None = None,
) -> tuple[ImageFolderLoader, ImageFolderLoader, ImageFolderLoader, ImageFolderLoader | None, int]:
    """Training, validation (held out from train) and test (official val) loaders, a recalibration loader, classes.

    With a ``shard``, training takes this process's rows of every batch and evaluation this
    process's part of each set. The recalibration loader (``None`` without a
    ``recalibration_size``) holds the first ``recalibration_size`` training images with the
    evaluation transform, in order, whole on every process.
    """
    eval_transform = _eval_transform(image_size)
    validation = _folder(root, "train", eval_transform)
    targets = torch.tensor(validation.targets)
    train_indices, val_indices = per_class_holdout(targets, VALIDATION_PER_CLASS, split_seed)
    train_indices, val_indices = train_indices[:train_size], val_indices[:eval_size]
    train = _with_transform(validation, train_transform(image_size, augment))
    test = _folder(root, "val", eval_transform)
    if test.classes != train.classes:
        raise DataError(f"{root / 'imagenet' / 'val'}: its class folders differ from train/'s")
    test_indices = list(range(len(test)))[:eval_size]
    val_indices = val_indices[shard.rows(len(val_indices))].tolist()
    test_indices = test_indices[shard.rows(len(test_indices))]
    recalibration = None
    if recalibration_size is not None:
        recalibration_indices = train_indices[:recalibration_size].tolist()
        recalibration = ImageFolderLoader(
            Subset(validation, recalibration_indices), batch_size, device, False, workers, seed
        )
    return (
        ImageFolderLoader(Subset(train, train_indices.tolist()), batch_size, device, True, workers, seed, shard),
        ImageFolderLoader(Subset(validation, val_indices), 2 * batch_size, device, False, workers, seed),
        ImageFolderLoader(Subset(test, test_indices), 2 * batch_size, device, False, workers, seed),
        recalibration,
        len(train.classes),
    )
