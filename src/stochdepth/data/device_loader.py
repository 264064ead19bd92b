"""Whole small-image data sets on the training device, batched and augmented there.

The uint8 images live on the device; each batch is gathered, normalised and augmented
with a few whole-batch tensor operations (no per-image Python work), so the input
pipeline never holds training back. Shuffling and augmentation each have their own
seeded generator whose state goes into checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 images, on the [0, 1] scale."""
    flat = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255
    return flat.mean(dim=1).float(), flat.std(dim=1).float()


def translate_and_flip(
    images: torch.Tensor, max_translation: int, horizontal_flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Shift each image by up to ``max_translation`` pixels (zero padding, then a crop) and flip half.

    The paper's augmentation (section 4, following He et al. 2015). Works on a whole
    (N, C, H, W) batch; zero is the mean after normalisation.
    """
    batch, _, height, width = images.shape
    device = images.device
    if max_translation > 0:
        shifts = torch.randint(
            -max_translation, max_translation + 1, (2, batch), generator=generator, device=generator.device
        ).to(device)
        padded = F.pad(images, (max_translation,) * 4)
        rows = torch.arange(height, device=device) + max_translation - shifts[0, :, None]
        cols = torch.arange(width, device=device) + max_translation - shifts[1, :, None]
        samples = torch.arange(batch, device=device)[:, None, None]
        images = padded[samples, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if horizontal_flip:
        flip = (torch.rand(batch, generator=generator, device=generator.device) < 0.5).to(device)
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    return images.contiguous()


class DeviceLoader:
    """Batches of normalised (and, for training, augmented) images from uint8 tensors on a device.

    ``shuffle=True`` draws a new order each epoch and drops the last incomplete batch (a
    tiny last batch would give BatchNorm too few samples), unless the set is smaller
    than one batch. Evaluation loaders keep the order and every image.
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
    ) -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.mean = (mean * 255).to(device).view(1, -1, 1, 1)
        self.std = (std * 255).to(device).view(1, -1, 1, 1)
        self.shuffle = shuffle
        self.max_translation = max_translation
        self.horizontal_flip = horizontal_flip
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
            images = (self.images[indices].float() - self.mean) / self.std
            if self.shuffle:
                images = translate_and_flip(
                    images, self.max_translation, self.horizontal_flip, self.augmentation_generator
                )
            yield images, self.labels[indices]

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
        self.position = int(state.get("data_position", 0))
        self.epoch_start_state = state["data_order"] if self.position > 0 else None
