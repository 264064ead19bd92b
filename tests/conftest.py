"""Shared test settings and fixtures: deterministic CPU runs, small data in the real formats."""

from pathlib import Path

import pytest
import torch

from stochdepth.config import TrainConfig
from tests.data.fixtures import write_fashion_mnist

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding a small Fashion-MNIST (5,400 training images: 400 after the split, 200 test)."""
    root = tmp_path_factory.mktemp("data")
    write_fashion_mnist(root / "fashion-mnist", train=5400, test=200)
    return root


@pytest.fixture
def tiny_config(synthetic_data_dir: Path) -> TrainConfig:
    """A resnet8 run of a few seconds on the synthetic data."""
    return TrainConfig().override(
        model="resnet8",
        dataset="fashion-mnist",
        data_dir=str(synthetic_data_dir),
        train_size=256,
        eval_size=64,
        batch_size=32,
        epochs=3,
        seed=1,
        device="cpu",
    )
