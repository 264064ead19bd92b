"""The data sets through build_loaders: splits, augmentation settings, missing-data errors."""

import dataclasses

import numpy as np
import pytest
import torch

from stochdepth.config import DataConfig
from stochdepth.data import DataError, Shard, build_loaders
from stochdepth.data.imagenet import LIGHTING_EIGENVALUES, LIGHTING_EIGENVECTORS, Lighting
from stochdepth.data.small_images import load_cifar10, load_fashion_mnist, load_svhn
from tests.data.fixtures import write_cifar10, write_fashion_mnist, write_svhn_mat

CPU = torch.device("cpu")


def test_cifar10_split_is_45k_5k_style_and_augmented(tmp_path):
    write_cifar10(tmp_path, per_batch=1100, test=300)
    splits = load_cifar10(tmp_path, download=False, split_seed=0)
    assert (len(splits.train_labels), len(splits.val_labels), len(splits.test_labels)) == (500, 5000, 300)
    assert splits.train_images.shape[1:] == (3, 32, 32) and splits.train_images.dtype == torch.uint8
    assert (splits.max_translation, splits.horizontal_flip) == (4, True)
    loaders = build_loaders(
        DataConfig(dataset="cifar10", data_dir=str(tmp_path), train_size=200, eval_size=100), 64, CPU, seed=0
    )
    assert len(loaders.train.labels) == 200 and len(loaders.val.labels) == 100 and len(loaders.test.labels) == 100
    spec = loaders.spec
    assert (spec.num_classes, spec.in_channels, spec.image_size) == (10, 3, 32)
    pixels = splits.train_images[:200].double() / 255
    torch.testing.assert_close(torch.tensor(spec.mean), pixels.mean(dim=(0, 2, 3)).float())
    torch.testing.assert_close(torch.tensor(spec.std), pixels.transpose(0, 1).reshape(3, -1).std(dim=1).float())
    torch.testing.assert_close(loaders.train.mean.flatten() / 255, torch.tensor(spec.mean))


def test_no_augment_trains_on_the_plain_normalised_images(tmp_path):
    write_cifar10(tmp_path, per_batch=1010, test=10)
    config = DataConfig(dataset="cifar10", data_dir=str(tmp_path), train_size=64, augment=False)
    loaders = build_loaders(config, 64, CPU, seed=0)
    ((first, _),) = list(loaders.train)
    ((second, _),) = list(loaders.train)
    assert torch.equal(first.sort(dim=0).values, second.sort(dim=0).values), "same images, only the order differs"
    augmented = build_loaders(dataclasses.replace(config, augment=True), 64, CPU, seed=0)
    ((shifted, _),) = list(augmented.train)
    assert not torch.equal(shifted.sort(dim=0).values, first.sort(dim=0).values)


def test_the_recalibration_batches_are_the_first_training_images_in_order_unaugmented_and_whole_on_each_shard(
    tmp_path,
):
    write_cifar10(tmp_path, per_batch=1010, test=10)
    config = DataConfig(dataset="cifar10", data_dir=str(tmp_path), train_size=100, augment=True)
    assert build_loaders(config, 16, CPU, seed=0).recalibration is None, "only when asked for"
    loaders = build_loaders(config, 16, CPU, seed=0, recalibration_size=40)
    splits = load_cifar10(tmp_path, download=False, split_seed=0)
    batches = list(loaders.recalibration)
    assert [len(labels) for _, labels in batches] == [16, 16, 8], "the global batch, the last one kept"
    images, labels = (torch.cat(parts) for parts in zip(*batches))
    assert torch.equal(labels, splits.train_labels[:40])
    expected = (splits.train_images[:40].float() - loaders.train.mean) / loaders.train.std
    assert torch.equal(images, expected), "normalised with the training statistics, no translation or flip"
    assert torch.equal(images, torch.cat([again for again, _ in loaders.recalibration])), "the same each time"
    for index in range(2):
        shard = build_loaders(config, 16, CPU, seed=0, shard=Shard(index, 2), recalibration_size=40)
        assert torch.equal(torch.cat([rows for rows, _ in shard.recalibration]), images)


def test_svhn_holds_out_400_per_class_of_train_and_200_of_extra_without_augmentation(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "svhn"
    for part, count in (("train", 4200), ("extra", 2100), ("test", 50)):
        images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
        write_svhn_mat(folder / f"{part}_32x32.mat", images, np.arange(count) % 10)
    splits = load_svhn(tmp_path, download=False, split_seed=0)
    assert len(splits.val_labels) == 6000
    assert torch.bincount(splits.val_labels).tolist() == [600] * 10
    assert len(splits.train_labels) == 4200 + 2100 - 6000
    assert len(splits.test_labels) == 50
    assert (splits.max_translation, splits.horizontal_flip) == (0, False)


def test_fashion_mnist_split_and_single_channel(tmp_path):
    write_fashion_mnist(tmp_path / "fashion-mnist", train=5200, test=40)
    splits = load_fashion_mnist(tmp_path, download=False, split_seed=0)
    assert (len(splits.train_labels), len(splits.val_labels), len(splits.test_labels)) == (200, 5000, 40)
    assert splits.train_images.shape[1:] == (1, 28, 28)
    assert splits.train_labels.dtype == torch.int64


@pytest.mark.parametrize(
    ("dataset", "named"),
    [("cifar10", "data_batch_1"), ("cifar100", "train"), ("svhn", "train_32x32.mat"), ("imagenet", "imagenet")],
)
def test_a_missing_data_set_names_its_files_and_how_to_get_it(tmp_path, dataset, named):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as error:
        build_loaders(DataConfig(dataset=dataset, data_dir=str(tmp_path / "empty")), 32, CPU, seed=0)
    message = str(error.value)
    assert named in message and "\n" not in message
    assert "data.download" in message or "image-net.org" in message


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path, download=False, split_seed=0)


def test_a_named_data_dir_is_used_alone_or_refused(tmp_path, monkeypatch):
    """Naming a folder never falls back to the system's copy; a file or a missing folder is refused."""
    monkeypatch.setattr("stochdepth.data.small_images.SYSTEM_DATA", tmp_path / "system")
    write_fashion_mnist(tmp_path / "system" / "fashion-mnist", train=5100, test=10)
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError, match="Fashion-MNIST not found"):
        build_loaders(DataConfig(data_dir=str(tmp_path / "mine")), 16, CPU, seed=0)
    (tmp_path / "passwd").write_text("root:x:0:0")
    for bad in ("passwd", "missing"):
        with pytest.raises(DataError, match="is not a folder"):
            build_loaders(DataConfig(data_dir=str(tmp_path / bad)), 16, CPU, seed=0)
    monkeypatch.setenv("STOCHDEPTH_DATA", str(tmp_path / "mine"))
    assert len(build_loaders(DataConfig(), 16, CPU, seed=0).test.labels) == 10


def test_labels_outside_the_classes_are_a_data_error_naming_the_file(tmp_path):
    import numpy as np

    from tests.data.fixtures import write_idx_gz

    folder = tmp_path / "fashion-mnist"
    write_fashion_mnist(folder, train=5100, test=10)
    write_idx_gz(folder / "t10k-labels-idx1-ubyte.gz", np.array([3] * 9 + [12]))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: labels outside 0..9"):
        load_fashion_mnist(tmp_path, download=False, split_seed=0)


def test_data_dir_comes_from_the_environment(tmp_path, monkeypatch):
    write_cifar10(tmp_path, per_batch=1010, test=20)
    monkeypatch.setenv("STOCHDEPTH_DATA", str(tmp_path))
    loaders = build_loaders(DataConfig(dataset="cifar10"), 16, CPU, seed=0)
    assert len(loaders.train.labels) == 50


def test_unknown_dataset_is_a_value_error():
    with pytest.raises(ValueError, match="cifar10, cifar100, svhn, fashion-mnist, imagenet"):
        build_loaders(DataConfig(dataset="mnist"), 16, CPU, seed=0)


def test_imagenet_folder_layout_holds_out_ten_per_class(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, count in (("train", 12), ("val", 2)):
        for name in ("n01", "n02", "n03"):
            folder = tmp_path / "imagenet" / part / name
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    config = DataConfig(dataset="imagenet", data_dir=str(tmp_path), image_size=16, workers=0)
    loaders = build_loaders(config, 4, CPU, seed=0, recalibration_size=5)
    assert (len(loaders.train.dataset), len(loaders.val.dataset)) == (6, 30)
    assert len(loaders.test.dataset) == 6
    images, labels = next(iter(loaders.train))
    assert images.shape == (4, 3, 16, 16) and labels.dtype == torch.int64
    assert loaders.spec.num_classes == 3
    assert (loaders.spec.mean, loaders.spec.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train_set, val_set = loaders.train.dataset, loaders.val.dataset
    assert not torch.equal(train_set[0][0], train_set[0][0])  # random-resized crop, jitter, lighting, flip
    assert torch.equal(val_set[0][0], val_set[0][0])  # resize and centre crop
    steps = [type(step).__name__ for step in train_set.dataset.transform.transforms]
    assert steps == ["RandomResizedCrop", "ColorJitter", "ToTensor", "Lighting", "Normalize", "RandomHorizontalFlip"]
    recalibration = [batch for batch in loaders.recalibration]
    assert [len(labels) for _, labels in recalibration] == [4, 1], "the first 5 training images, the last batch kept"
    assert loaders.recalibration.dataset.indices == train_set.indices[:5], "in the training split's order"
    first, again = torch.cat([images for images, _ in recalibration]), next(iter(loaders.recalibration))[0]
    assert torch.equal(first[:4], again), "the evaluation transform: the same images each time"
    assert torch.equal(first[0], val_set.dataset[train_set.indices[0]][0])


def test_imagenet_shards_take_their_rows_of_every_training_batch_and_their_part_of_each_set(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for part, count in (("train", 14), ("val", 3)):
        for name in ("n01", "n02"):
            folder = tmp_path / "imagenet" / part / name
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(rng.integers(0, 256, (18, 18, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    config = DataConfig(dataset="imagenet", data_dir=str(tmp_path), image_size=16, workers=0, augment=False)
    whole = build_loaders(config, 4, CPU, seed=0)
    shards = [build_loaders(config, 4, CPU, seed=0, shard=Shard(index, 2)) for index in range(2)]
    for batch, first, second in zip(whole.train, shards[0].train, shards[1].train, strict=True):
        assert torch.equal(torch.cat([first[1], second[1]]), batch[1])
        assert torch.equal(torch.cat([first[0], second[0]]), batch[0])
    for part in ("val", "test"):
        together = [labels for shard in shards for _, labels in getattr(shard, part)]
        assert torch.equal(torch.cat(together), torch.cat([labels for _, labels in getattr(whole, part)]))


def test_lighting_noise_shifts_every_pixel_by_one_colour_along_the_pca_axes():
    torch.manual_seed(0)
    image = torch.rand(3, 5, 6)
    shifts = torch.stack([(Lighting()(image) - image)[:, 0, 0] for _ in range(2000)])
    shifted = Lighting()(image) - image
    torch.testing.assert_close(shifted, shifted[:, :1, :1].expand_as(shifted))
    eigenvectors, eigenvalues = torch.tensor(LIGHTING_EIGENVECTORS), torch.tensor(LIGHTING_EIGENVALUES)
    alphas = torch.linalg.solve(eigenvectors, shifts.T).T / eigenvalues
    assert alphas.std(dim=0).tolist() == pytest.approx([0.1] * 3, rel=0.1)


DAMAGED_IDX = {
    "fewer labels than images": ("train-labels-idx1-ubyte.gz", lambda: np.arange(5300) % 10, False, "5300 labels"),
    "fewer images than labels": ("train-images-idx3-ubyte.gz", lambda: np.zeros((5300, 28, 28)), False, "5400 labels"),
    "a 1-D image file": ("t10k-images-idx3-ubyte.gz", lambda: np.zeros(200 * 784), False, "N x H x W"),
    "a 4-D image file": ("t10k-images-idx3-ubyte.gz", lambda: np.zeros((200, 1, 28, 28)), False, "N x H x W"),
    "float labels": ("t10k-labels-idx1-ubyte.gz", lambda: np.arange(200) % 10, True, "integer labels"),
    "test images of another size": ("t10k-images-idx3-ubyte.gz", lambda: np.zeros((200, 32, 32)), False, "32, 32"),
    "an empty test set": ("t10k-images-idx3-ubyte.gz", lambda: np.zeros((0, 28, 28)), False, "0 labels|no images"),
}


@pytest.mark.parametrize("damage", DAMAGED_IDX)
def test_damaged_idx_data_is_one_data_error_naming_the_file_and_nothing_is_written(tmp_path, damage, capsys):
    from stochdepth.cli import main
    from tests.data.fixtures import write_idx_gz

    name, values, as_float, message = DAMAGED_IDX[damage]
    write_fashion_mnist(tmp_path / "data" / "fashion-mnist", train=5400, test=200)
    if damage == "an empty test set":
        write_idx_gz(tmp_path / "data" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz", np.zeros(0))
    write_idx_gz(tmp_path / "data" / "fashion-mnist" / name, values(), as_float=as_float)
    with pytest.raises(DataError, match=message):
        build_loaders(DataConfig(dataset="fashion-mnist", data_dir=str(tmp_path / "data")), 32, CPU, seed=0)
    flags = ["train", "--model", "resnet8", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "data")]
    assert main([*flags, "--out", str(tmp_path / "run"), "--epochs", "1"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "fashion-mnist/" in error
    assert not (tmp_path / "run").exists()
