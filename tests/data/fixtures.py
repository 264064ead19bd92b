"""Writers of small files in the real on-disk formats (CIFAR pickles, SVHN .mat, IDX .gz)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from scipy.io import savemat


def write_idx_gz(path: Path, array: np.ndarray, as_float: bool = False) -> None:
    """An IDX file of unsigned bytes (0x08), or big-endian 32-bit floats (0x0D) with ``as_float``."""
    code, values = (0x0D, array.astype(">f4")) if as_float else (0x08, array.astype(np.uint8))
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + values.tobytes())


def write_fashion_mnist(folder: Path, train: int, test: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        write_idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        write_idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 10)


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: bytes) -> None:
    batch = {b"batch_label": b"testing", label_key: labels.tolist(), b"data": images.reshape(len(images), -1)}
    with open(path, "wb") as file:
        pickle.dump(batch, file, protocol=2)


def write_cifar10(root: Path, per_batch: int, test: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{index}" for index in range(1, 6)]
    for name, count in [(name, per_batch) for name in names] + [("test_batch", test)]:
        images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
        write_cifar_batch(folder / name, images, np.arange(count) % 10, b"labels")


def write_svhn_mat(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """images (N, 3, 32, 32) uint8, labels 0..9, written as SVHN does: X (32, 32, 3, N), 0 as 10."""
    path.parent.mkdir(parents=True, exist_ok=True)
    y = np.where(labels == 0, 10, labels).reshape(-1, 1).astype(np.uint8)
    savemat(path, {"X": np.transpose(images, (2, 3, 1, 0)), "y": y})
