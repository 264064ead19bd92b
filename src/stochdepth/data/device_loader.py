"""Whole small-image data sets on the training device, batched and augmented there.

The uint8 images live on the device; each batch is gathered, normalised and augmented
with a few whole-batch tensor operations (no per-image Python work), so the input
pipeline never holds training back. Shuffling and augmentation each have their own
seeded generator whose state goes into checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stochdepth.data.shard import WHOLE, Shard


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 images, on the [0, 1] scale."""
    flat = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255
    return flat.mean(dim=1).float(), flat.std(dim=1).float()


@dataclass(frozen=True)
class Augmentation:
    """One batch's random translations and flips (the paper's augmentation, section 4, after He et al. 2015).

    Drawn for a whole global batch by every process alike and then cut to each process's
    rows (:meth:`rows`), so data-parallel training augments every image exactly as one
    process would.
    """

    max_translation: int
    shifts: torch.Tensor | None
    flips: torch.Tensor | None

    def rows(self, rows: slice) -> Augmentation:
        shifts = None if self.shifts is None else self.shifts[:, rows]
        flips = None if self.flips is None else self.flips[rows]
        return Augmentation(self.max_translation, shifts, flips)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Shift each image (zero padding, then a crop; zero is the mean after normalisation) and flip some."""
        batch, _, height, width = images.shape
        device = images.device
        if self.shifts is not None:
            margin = self.max_translation
            shifts = self.shifts.to(device)
            padded = F.pad(images, (margin,) * 4)
            rows = torch.arange(height, device=device) + margin - shifts[0, :, None]
            cols = torch.arange(width, device=device) + margin - shifts[1, :, None]
            samples = torch.arange(batch, device=device)[:, None, None]
            images = padded[samples, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        if self.flips is not None:
            images = torch.where(self.flips.to(device)[:, None, None, None], images.flip(3), images)
        return images.contiguous()


def draw_augmentation(
    batch: int, max_translation: int, horizontal_flip: bool, generator: torch.Generator
) -> Augmentation:
    """Shifts of up to ``max_translation`` pixels each way and a flip for half the images, on average."""
    shifts = flips = None
    if max_translation > 0:
        shifts = torch.randint(
            -max_translation, max_translation + 1, (2, batch), generator=generator, device=generator.device
        )
    if horizontal_flip:
        flips = torch.rand(batch, generator=generator, device=generator.device) < 0.5
    return Augmentation(max_translation, shifts, flips)


class DeviceLoader:
    """Batches of normalised (and, for training, augmented) images from uint8 tensors on a device.

    ``shuffle=True`` draws a new order each epoch and drops the last incomplete batch (a
    tiny last batch would give BatchNorm too few samples), unless the set is smaller
    than one batch. Evaluation loaders keep the order and every image.

    With a ``shard`` (data-parallel training) each process draws the same order and
    augmentation and takes its rows of every batch: the processes' batches together are
    the single-process batch, augmented alike.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        device: torch.device,
        shuffle: bool = False,
        max_translation: int = 0,
        horizontal_flip: bool = False,
        seed: int = 0,
        shard: Shard = WHOLE,
    ) -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.mean = (mean * 255).to(device).view(1, -1, 1, 1)
        self.std = (std * 255).to(device).view(1, -1, 1, 1)
        self.shuffle = shuffle
        self.max_translation = max_translation
        self.horizontal_flip = horizontal_flip
        self.shard = shard
        self.epoch_order = EpochOrder(seed)
        self.augmentation_generator = torch.Generator(device=device).manual_seed(seed + 1)

    def __len__(self) -> int:
        if self.shuffle:
            return max(1, len(self.labels) // self.batch_size)
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.labels)
        if self.shuffle:
            order = self.epoch_order.draw(lambda generator: torch.randperm(count, generator=generator))
            order = order.to(self.images.device)
        else:
            order = torch.arange(count, device=self.images.device)
        for batch in self.epoch_order.batches(len(self)):
            indices = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            rows = self.shard.rows(len(indices))
            images = (self.images[indices[rows]].float() - self.mean) / self.std
            if self.shuffle:
                augmentation = draw_augmentation(
                    len(indices), self.max_translation, self.horizontal_flip, self.augmentation_generator
                )
                images = augmentation.rows(rows).apply(images)
            yield images, self.labels[indices[rows]]

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {**self.epoch_order.state_dict(), "augmentation": self.augmentation_generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        self.epoch_order.load_state_dict(state)
        self.augmentation_generator.set_state(state["augmentation"])


class EpochOrder:
    """A seeded order generator plus the position in the current epoch, so a run resumes mid-epoch.

    The generator's state at the start of an epoch is kept until the epoch ends: a
    checkpoint taken after ``position`` batches holds that state and the position, and a
    loader restored from it draws the same order again and continues at batch
    ``position``, neither repeating nor skipping a batch.
    """

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch_start_state: torch.Tensor | None = None
        self.position = 0

    def draw(self, make_order: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
        """The epoch's order, drawn from the epoch's starting state."""
        if self.epoch_start_state is None:
            self.epoch_start_state = self.generator.get_state()
        else:
            self.generator.set_state(self.epoch_start_state)
        return make_order(self.generator)

    def batches(self, count: int) -> Iterator[int]:
        """Batch numbers from the current position to ``count``; the epoch ends after the last."""
        for batch in range(self.position, count):
            self.position = batch + 1
            yield batch
        self.position = 0
        self.epoch_start_state = None

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        in_epoch = self.position > 0 and self.epoch_start_state is not None
        return {
            "data_order": self.epoch_start_state if in_epoch else self.generator.get_state(),
            "data_position": self.position if in_epoch else 0,
        }

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        self.generator.set_state(state["data_order"])
        position = state.get("data_position", 0)
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ValueError(f"data_position must be a whole number of batches, got {position!r}")
        self.position = position
        self.epoch_start_state = state["data_order"] if self.position > 0 else None
