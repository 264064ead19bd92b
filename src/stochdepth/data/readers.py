"""Readers for the standard on-disk formats, straight into uint8 tensors.

The project's own small readers rather than torchvision's dataset classes: those check
hard-coded MD5s at construction (so small test files fail) and hand out one PIL image at
a time, while training here wants whole uint8 tensors it can move to the device at once.
Each reader raises :class:`DataError` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import typing
from pathlib import Path

import numpy as np
import torch


class DataError(ValueError):
    """A data set is missing or damaged; the message names the files and how to get them."""


IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4")}


def read_idx_gz(path: Path) -> torch.Tensor:
    """Read a gzipped IDX file (the MNIST / Fashion-MNIST format) into a tensor of its shape."""
    try:
        with gzip.open(path, "rb") as file:
            data = file.read()
        zero, dtype_code, num_dims = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code not in IDX_DTYPES:
            raise DataError(f"{path}: not an IDX file (bad magic number)")
        shape = struct.unpack(f">{num_dims}I", data[4 : 4 + 4 * num_dims])
        array = np.frombuffer(data, dtype=IDX_DTYPES[dtype_code], offset=4 + 4 * num_dims)
        if array.size != int(np.prod(shape)):
            raise DataError(f"{path}: truncated IDX file ({array.size} values, header says {int(np.prod(shape))})")
    except (OSError, EOFError, struct.error) as error:
        raise DataError(f"{path}: cannot read IDX file ({error})") from None
    kind = np.uint8 if dtype_code == 0x08 else np.float32 if dtype_code == 0x0D else np.int64
    return torch.from_numpy(array.reshape(shape).astype(kind))


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickle CIFAR batches without running arbitrary code: only NumPy arrays are rebuilt."""

    ALLOWED: typing.ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one CIFAR python batch: images as (N, 3, 32, 32) uint8 and labels as int64.

    ``label_key`` is ``"labels"`` for CIFAR-10 and ``"fine_labels"`` for CIFAR-100. The
    pickle is read with an unpickler that rebuilds NumPy arrays and nothing else.
    """
    try:
        with open(path, "rb") as file:
            batch = _ArraysOnlyUnpickler(file, encoding="bytes").load()
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[label_key.encode()], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path}: not a readable CIFAR batch ({error})") from None
    if len(images) != len(labels):
        raise DataError(f"{path}: {len(images)} images but {len(labels)} labels")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels)


def read_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read an SVHN ``*_32x32.mat`` file: images (N, 3, 32, 32) uint8, labels 0..9 (the file writes 0 as 10)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path)
        images = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)), dtype=np.uint8)
        labels = mat["y"].astype(np.int64).reshape(-1) % 10
    except (OSError, ValueError, KeyError, TypeError, IndexError, MatReadError) as error:
        raise DataError(f"{path}: not a readable SVHN .mat file ({error})") from None
    if len(images) != len(labels):
        raise DataError(f"{path}: {len(images)} images but {len(labels)} labels")
    return torch.from_numpy(images), torch.from_numpy(labels)
