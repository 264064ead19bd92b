"""The readers on small files written in the real formats."""

import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from stochdepth.data.readers import DataError, read_cifar_batch, read_idx_gz, read_svhn_mat
from tests.data.fixtures import write_cifar_batch, write_idx_gz, write_svhn_mat


def test_idx_reader_round_trips(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx_gz(tmp_path / "images.gz", images)
    assert torch.equal(read_idx_gz(tmp_path / "images.gz"), torch.from_numpy(images))


def test_idx_reader_refuses_truncated_and_foreign_files(tmp_path):
    write_idx_gz(tmp_path / "images.gz", np.zeros((5, 28, 28), dtype=np.uint8))
    with gzip.open(tmp_path / "images.gz") as file:
        data = file.read()
    with gzip.open(tmp_path / "short.gz", "wb") as file:
        file.write(data[:-100])
    with pytest.raises(DataError, match="short.gz: truncated"):
        read_idx_gz(tmp_path / "short.gz")
    (tmp_path / "text.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="text.gz"):
        read_idx_gz(tmp_path / "text.gz")


def test_cifar_reader_gives_nchw_uint8_and_labels(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 97, 98, 99])
    write_cifar_batch(tmp_path / "train", images, labels, b"fine_labels")
    read_images, read_labels = read_cifar_batch(tmp_path / "train", "fine_labels")
    assert read_images.dtype == torch.uint8
    assert torch.equal(read_images, torch.from_numpy(images))
    assert read_labels.tolist() == labels.tolist()


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_reader_refuses_a_pickle_that_would_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "data_batch_1", "wb") as file:
        pickle.dump({b"data": _Payload(), b"labels": [0]}, file, protocol=2)
    with pytest.raises(DataError, match="data_batch_1.*refusing to load"):
        read_cifar_batch(tmp_path / "data_batch_1", "labels")
    assert not (tmp_path / "pwned").exists()


def test_svhn_reader_transposes_and_maps_ten_to_zero(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    labels = np.array([0, 1, 2, 7, 9, 0])
    write_svhn_mat(tmp_path / "train_32x32.mat", images, labels)
    read_images, read_labels = read_svhn_mat(tmp_path / "train_32x32.mat")
    assert torch.equal(read_images, torch.from_numpy(images))
    assert read_labels.tolist() == labels.tolist()


def test_svhn_reader_refuses_a_damaged_file(tmp_path):
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 40)
    with pytest.raises(DataError, match="test_32x32.mat"):
        read_svhn_mat(tmp_path / "test_32x32.mat")
