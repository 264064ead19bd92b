"""Batch augmentation on the device: shapes, the translation bound, flips; loader order and state."""

import pytest
import torch

from stochdepth.data import Shard
from stochdepth.data.device_loader import DeviceLoader, channel_stats, draw_augmentation


def _recover_shift(original: torch.Tensor, moved: torch.Tensor, bound: int) -> tuple[int, int, bool] | None:
    """The (dy, dx, flipped) that turns ``original`` into ``moved`` with zero fill, if any."""
    for flipped in (False, True):
        source = original.flip(-1) if flipped else original
        for dy in range(-bound, bound + 1):
            for dx in range(-bound, bound + 1):
                padded = torch.nn.functional.pad(source, (bound,) * 4)
                height, width = source.shape[-2:]
                window = padded[..., bound - dy : bound - dy + height, bound - dx : bound - dx + width]
                if torch.equal(window, moved):
                    return dy, dx, flipped
    return None


def test_translation_is_at_most_four_pixels_with_zero_fill_and_half_are_flipped():
    images = torch.rand(64, 3, 12, 12) + 0.5
    generator = torch.Generator().manual_seed(0)
    moved = draw_augmentation(64, 4, True, generator).apply(images)
    assert moved.shape == images.shape
    found = [_recover_shift(images[index], moved[index], 4) for index in range(64)]
    assert all(item is not None for item in found)
    assert len({(dy, dx) for dy, dx, _ in found}) > 20
    flips = sum(flipped for _, _, flipped in found)
    assert 16 <= flips <= 48


def test_no_augmentation_leaves_images_alone():
    images = torch.rand(8, 3, 32, 32)
    assert torch.equal(draw_augmentation(8, 0, False, torch.Generator().manual_seed(0)).apply(images), images)


def test_channel_stats_are_those_of_the_training_images():
    images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(images)
    torch.testing.assert_close(mean, (images.float() / 255).mean(dim=(0, 2, 3)))
    torch.testing.assert_close(std, (images.double() / 255).transpose(0, 1).reshape(3, -1).std(dim=1).float())


def _loader(seed: int, shuffle: bool = True) -> DeviceLoader:
    images = torch.arange(10 * 3 * 4 * 4, dtype=torch.float32).remainder(256).to(torch.uint8).view(10, 3, 4, 4)
    labels = torch.arange(10)
    return DeviceLoader(
        images,
        labels,
        4,
        torch.full((3,), 0.5),
        torch.full((3,), 0.25),
        torch.device("cpu"),
        shuffle=shuffle,
        max_translation=1,
        horizontal_flip=True,
        seed=seed,
    )


def test_training_loader_shuffles_drops_the_last_partial_batch_and_resumes_exactly():
    loader = _loader(seed=0)
    assert len(loader) == 2
    first_epoch = [labels.tolist() for _, labels in loader]
    assert all(len(labels) == 4 for labels in first_epoch)
    state = loader.state_dict()
    second_epoch = [(images.clone(), labels.clone()) for images, labels in loader]
    resumed = _loader(seed=5)
    resumed.load_state_dict(state)
    for (images, labels), (again_images, again_labels) in zip(second_epoch, resumed, strict=True):
        assert torch.equal(labels, again_labels) and torch.equal(images, again_images)


def test_evaluation_loader_keeps_order_and_every_image_normalised():
    loader = _loader(seed=0, shuffle=False)
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    assert torch.cat([labels for _, labels in batches]).tolist() == list(range(10))
    first = loader.images[0].float()
    torch.testing.assert_close(batches[0][0][0], (first - 0.5 * 255) / (0.25 * 255))


def test_a_loader_restored_mid_epoch_continues_without_repeating_or_skipping():
    loader = _loader(seed=3)
    loader.batch_size = 2
    batches = iter(loader)
    seen = [next(batches)[1].tolist(), next(batches)[1].tolist()]
    state = loader.state_dict()
    assert state["data_position"] == 2
    rest = [(images.clone(), labels.tolist()) for images, labels in batches]
    restored = _loader(seed=9)
    restored.batch_size = 2
    restored.load_state_dict(state)
    again = [(images, labels.tolist()) for images, labels in restored]
    assert [labels for _, labels in again] == [labels for _, labels in rest]
    assert all(torch.equal(first, second) for (first, _), (second, _) in zip(rest, again, strict=True))
    handed_out = [label for labels in seen + [labels for _, labels in rest] for label in labels]
    assert sorted(handed_out) == list(range(10))
    next_epoch = [labels.tolist() for _, labels in loader]
    assert next_epoch == [labels.tolist() for _, labels in restored]


def test_shards_split_any_count_into_disjoint_contiguous_parts():
    for total in (0, 1, 7, 16):
        parts = [list(range(total))[Shard(index, 3).rows(total)] for index in range(3)]
        assert [row for part in parts for row in part] == list(range(total))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match="shard 2 of 2 does not exist"):
        Shard(2, 2)


def test_two_shards_together_are_the_single_process_batches_augmentation_included():
    def batches(shard: Shard) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = _loader(seed=4)
        loader.shard = shard
        return [(images.clone(), labels.clone()) for _ in range(3) for images, labels in loader]

    whole, first, second = batches(Shard()), batches(Shard(0, 2)), batches(Shard(1, 2))
    assert len(whole) == len(first) == len(second) == 6
    for (images, labels), (images0, labels0), (images1, labels1) in zip(whole, first, second):
        assert len(labels0) == len(labels1) == 2
        assert torch.equal(torch.cat([labels0, labels1]), labels)
        assert torch.equal(torch.cat([images0, images1]), images)
    assert any(not torch.equal(images, _loader(seed=4).images[labels].float()) for images, labels in whole)
