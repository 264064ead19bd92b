"""The small-image data sets of the paper (CIFAR-10/100, SVHN) and Fashion-MNIST.

Each is read whole into uint8 tensors with the paper's split:

============= ================================= ======================== ========= ===================
name          training                          validation               test      augmentation
============= ================================= ======================== ========= ===================
cifar10       45,000 of the 50,000              5,000 held out (seeded)  10,000    translate 4 px, flip
cifar100      45,000 of the 50,000              5,000 held out (seeded)  10,000    translate 4 px, flip
svhn          train + extra less validation     400/class of train +     26,032    none (digits)
                                                200/class of extra
fashion-mnist 55,000 of the 60,000              5,000 held out (seeded)  10,000    translate 4 px, flip
============= ================================= ======================== ========= ===================

Files are found under the data directory (``--data-dir``, else ``$STOCHDEPTH_DATA``, else
``./data``) in the layout their archives unpack to; Fashion-MNIST is also found where
Debian's ``dataset-fashion-mnist`` package installs it. With ``download=True`` missing
files are fetched with torchvision's download utilities, which verify the MD5s that
torchvision records for each file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.datasets import CIFAR10, CIFAR100, SVHN, FashionMNIST
from torchvision.datasets.utils import download_and_extract_archive, download_url

from stochdepth.data.readers import DataError, read_cifar_batch, read_idx_gz, read_svhn_mat
from stochdepth.data.splits import holdout_split, per_class_holdout

SYSTEM_DATA = Path("/usr/share/datasets")
"""Where Debian's data set packages (dataset-fashion-mnist) install, searched after the default data dir."""


@dataclass
class ImageSplits:
    """A small-image data set, split; images are uint8 (N, C, H, W), labels int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    max_translation: int
    horizontal_flip: bool


def data_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    """Where to look for data, in order: ``data_dir`` alone when the user names one, else
    ``$STOCHDEPTH_DATA`` (or ``./data``) and then the system's data packages."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise DataError(f"data dir {root} is not a folder")
        return [root]
    return [Path(os.environ.get("STOCHDEPTH_DATA") or "data").expanduser(), SYSTEM_DATA]


def check_labels(labels: torch.Tensor, num_classes: int, source: Path) -> torch.Tensor:
    """``labels`` if every one is a class index in [0, num_classes), else a :class:`DataError` naming ``source``."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{source}: labels outside 0..{num_classes - 1} (damaged or not this data set)")
    return labels


def _idx_images_and_labels(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One IDX pair checked: N images of H x W (made N x 1 x H x W), N integer labels in 0..9, N > 0."""
    images, labels = read_idx_gz(images_path), read_idx_gz(labels_path)
    if images.dim() != 3 or images.dtype != torch.uint8:
        raise DataError(f"{images_path}: expected unsigned bytes of shape N x H x W, got {tuple(images.shape)}")
    if labels.dim() != 1 or labels.is_floating_point():
        raise DataError(f"{labels_path}: expected N integer labels, got {labels.dtype} of shape {tuple(labels.shape)}")
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path.name}")
    if len(images) == 0:
        raise DataError(f"{images_path}: holds no images")
    return images.unsqueeze(1), check_labels(labels.long(), 10, labels_path)


def _split(
    images: torch.Tensor, labels: torch.Tensor, holdout: int, split_seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    train, val = holdout_split(len(labels), holdout, split_seed)
    return images[train], labels[train], images[val], labels[val]


class DataMissing(DataError):
    """A data set's files are not where they were looked for."""


def _missing_error(name: str, missing: list[Path], how: str) -> DataMissing:
    shown = ", ".join(str(path) for path in missing[:4]) + (" ..." if len(missing) > 4 else "")
    return DataMissing(f"{name} not found: missing {shown}; {how}")


def load_fashion_mnist(root: Path, download: bool, split_seed: int) -> ImageSplits:
    names = [name for name, _ in FashionMNIST.resources]
    candidates = [root / "fashion-mnist", root / "FashionMNIST" / "raw", root]
    folder = next((path for path in candidates if all((path / name).is_file() for name in names)), None)
    if folder is None and download:
        folder = root / "fashion-mnist"
        for name, md5 in FashionMNIST.resources:
            download_url(FashionMNIST.mirrors[0] + name, str(folder), filename=name, md5=md5)
    if folder is None:
        raise _missing_error(
            "Fashion-MNIST",
            [candidates[0] / name for name in names],
            "install Debian's package (apt-get install dataset-fashion-mnist) or set data.download",
        )
    train_images, train_labels = _idx_images_and_labels(folder / names[0], folder / names[1])
    test_images, test_labels = _idx_images_and_labels(folder / names[2], folder / names[3])
    if test_images.shape[1:] != train_images.shape[1:]:
        raise DataError(
            f"{folder / names[2]}: images of {tuple(test_images.shape[2:])} px, the training images are "
            f"{tuple(train_images.shape[2:])} px"
        )
    return ImageSplits(
        *_split(train_images, train_labels, 5000, split_seed),
        test_images,
        test_labels,
        num_classes=10,
        max_translation=4,
        horizontal_flip=True,
    )


def _load_cifar(dataset: type[CIFAR10], label_key: str, num_classes: int, root: Path, download: bool, split_seed: int):
    folder = root / dataset.base_folder
    files = [folder / name for name, _ in dataset.train_list + dataset.test_list]
    if not all(path.is_file() for path in files) and download:
        download_and_extract_archive(dataset.url, str(root), filename=dataset.filename, md5=dataset.tgz_md5)
    missing = [path for path in files if not path.is_file()]
    if missing:
        raise _missing_error(
            dataset.__name__.replace("CIFAR", "CIFAR-"),
            missing,
            f"set data.download, or fetch {dataset.url} and extract it into {root}",
        )
    batches = [read_cifar_batch(folder / name, label_key) for name, _ in dataset.train_list]
    for (name, _), (_, labels) in zip(dataset.train_list, batches):
        check_labels(labels, num_classes, folder / name)
    train_images = torch.cat([images for images, _ in batches])
    train_labels = torch.cat([labels for _, labels in batches])
    test_images, test_labels = read_cifar_batch(folder / dataset.test_list[0][0], label_key)
    check_labels(test_labels, num_classes, folder / dataset.test_list[0][0])
    return ImageSplits(
        *_split(train_images, train_labels, 5000, split_seed),
        test_images,
        test_labels,
        num_classes=num_classes,
        max_translation=4,
        horizontal_flip=True,
    )


def load_cifar10(root: Path, download: bool, split_seed: int) -> ImageSplits:
    return _load_cifar(CIFAR10, "labels", 10, root, download, split_seed)


def load_cifar100(root: Path, download: bool, split_seed: int) -> ImageSplits:
    return _load_cifar(CIFAR100, "fine_labels", 100, root, download, split_seed)


def load_svhn(root: Path, download: bool, split_seed: int) -> ImageSplits:
    folder = root / "svhn"
    parts = {part: folder / filename for part, (_, filename, _) in SVHN.split_list.items()}
    for part, (url, filename, md5) in SVHN.split_list.items():
        if not parts[part].is_file() and download:
            download_url(url, str(folder), filename=filename, md5=md5)
    missing = [path for path in parts.values() if not path.is_file()]
    if missing:
        raise _missing_error("SVHN", missing, f"set data.download, or put train/test/extra_32x32.mat in {folder}")
    train_images, train_labels = read_svhn_mat(parts["train"])
    extra_images, extra_labels = read_svhn_mat(parts["extra"])
    test_images, test_labels = read_svhn_mat(parts["test"])
    for labels, part in ((train_labels, "train"), (extra_labels, "extra"), (test_labels, "test")):
        check_labels(labels, 10, parts[part])
    train_kept, train_val = per_class_holdout(train_labels, 400, split_seed)
    extra_kept, extra_val = per_class_holdout(extra_labels, 200, split_seed + 1)
    mixed = torch.randperm(len(train_kept) + len(extra_kept), generator=torch.Generator().manual_seed(split_seed))
    return ImageSplits(
        torch.cat([train_images[train_kept], extra_images[extra_kept]])[mixed],
        torch.cat([train_labels[train_kept], extra_labels[extra_kept]])[mixed],
        torch.cat([train_images[train_val], extra_images[extra_val]]),
        torch.cat([train_labels[train_val], extra_labels[extra_val]]),
        test_images,
        test_labels,
        num_classes=10,
        max_translation=0,
        horizontal_flip=False,
    )


SMALL_IMAGE_DATASETS: dict[str, Callable[[Path, bool, int], ImageSplits]] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "svhn": load_svhn,
    "fashion-mnist": load_fashion_mnist,
}
