"""Export: the folded network with the data's normalisation inside, as a user runs it on raw images."""

import dataclasses
import importlib.util

import pytest
import torch

import stochdepth
from stochdepth.cli import main
from stochdepth.data import DataSpec, build_loaders
from stochdepth.data.readers import read_idx_gz
from stochdepth.export import export_model
from stochdepth.train import load_trained_model
from tests.conftest import REAL_FASHION_MNIST
from tests.helpers import randomise_batchnorm

needs_onnx = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs the onnx extra")


def test_fold_does_not_change_the_input_model():
    model = randomise_batchnorm(stochdepth.create_model("resnet8")).eval()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    stochdepth.fold_survival(model)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_unknown_export_format_is_a_value_error(tmp_path):
    spec = DataSpec(10, 3, 8, (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(ValueError, match="safetensors, torchscript, exported, onnx"):
        export_model(stochdepth.create_model("resnet8").eval(), spec, tmp_path / "m", "pickle")


def test_exported_program_normalises_raw_images_itself(tmp_path):
    spec = DataSpec(10, 3, 16, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    folded = stochdepth.fold_survival(randomise_batchnorm(stochdepth.create_model("resnet8")).eval())
    (path,) = export_model(folded, spec, tmp_path / "model.pt2", "exported")
    raw = torch.rand(5, 3, 16, 16)
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(str(path)).module()(raw), folded((raw - mean) / std))


@needs_onnx
def test_onnx_on_raw_test_images_agrees_with_eval(tmp_path, synthetic_data_dir):
    """The README's promise: an exported model classifies raw [0, 1] images as ``stochdepth eval`` does."""
    import onnxruntime

    on_real_data = REAL_FASHION_MNIST.is_dir()
    data_dir = REAL_FASHION_MNIST.parent if on_real_data else synthetic_data_dir
    run = tmp_path / "run"
    flags = ["--model", "resnet8", "--dataset", "fashion-mnist", "--data-dir", str(data_dir), "--device", "cpu"]
    sizes = ["--train-size", "1024", "--batch-size", "128", "--epochs", "1", "--eval-size", "128"]
    assert main(["train", *flags, *sizes, "--out", str(run)]) == 0
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "model.onnx")]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx", "run"], "one self-contained file"

    model, config, _ = load_trained_model(run)
    test = build_loaders(dataclasses.replace(config.data, eval_size=None), 500, torch.device("cpu"), 0).test
    with torch.no_grad():
        expected = torch.cat([model(images).argmax(dim=1) for images, _ in test])
    folder = data_dir / "fashion-mnist" if (data_dir / "fashion-mnist").is_dir() else REAL_FASHION_MNIST
    raw = read_idx_gz(folder / "t10k-images-idx3-ubyte.gz").unsqueeze(1).float().div(255).numpy()
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    chunks = [session.run(None, {"images": raw[start : start + 1000]})[0] for start in range(0, len(raw), 1000)]
    predicted = torch.cat([torch.from_numpy(chunk) for chunk in chunks])
    agreement = (predicted.argmax(dim=1) == expected).double().mean().item()
    assert len(expected) == (10_000 if on_real_data else 200)
    assert agreement >= 0.999


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mean": [0.5]}, "one number per channel"),
        ({"std": [0.2, 0.0, 0.2]}, r"std numbers in \[1e-6, 1000\]"),
        ({"std": [0.2, float("inf"), 0.2]}, "std numbers"),
        ({"std": [0.2, 5e-324, 0.2]}, "std numbers"),
        ({"mean": [10**400, 0.5, 0.5]}, r"mean must be numbers in \[-1000, 1000\]"),
        ({"mean": [float("nan"), 0.5, 0.5]}, "mean must be numbers"),
        ({"num_classes": 100_000}, "out of range"),
        ({"num_classes": "ten"}, "integers"),
        ({"image_size": 100_000}, "out of range"),
    ],
)
def test_a_damaged_data_spec_is_refused(change, message):
    values = {"num_classes": 10, "in_channels": 3, "image_size": 32, "mean": [0.5] * 3, "std": [0.2] * 3}
    assert DataSpec.from_dict(values).std == (0.2, 0.2, 0.2)
    with pytest.raises(ValueError, match=message):
        DataSpec.from_dict({**values, **change})


@pytest.mark.parametrize("export_format", ["safetensors", "torchscript", "exported", "onnx"])
def test_a_full_disk_during_export_is_one_line_and_leaves_no_file(tmp_path, monkeypatch, export_format):
    import errno

    from stochdepth import files

    spec = DataSpec(10, 3, 16, (0.5,) * 3, (0.25,) * 3)
    folded = stochdepth.fold_survival(stochdepth.create_model("resnet8").eval())

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    if export_format == "onnx":
        monkeypatch.setattr("stochdepth.export._export_onnx", lambda classifier, example, path: path.write_bytes(b"x"))
    with pytest.raises(ValueError, match=r"cannot write .*model: No space left on device"):
        export_model(folded, spec, tmp_path / "model", export_format)
    assert list(tmp_path.iterdir()) == []
