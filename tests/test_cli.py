"""The command line: list, train, eval, export, and one clear line for each bad input."""

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

import stochdepth
from stochdepth.cli import main
from stochdepth.depth import StochasticModule
from stochdepth.train import load_trained_model
from stochdepth.train.run_folder import RunFolder
from tests.helpers import one_line_error


def _tiny_flags(data_dir, out, model="resnet8") -> list[str]:
    return [
        "train",
        "--model",
        model,
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(data_dir),
        "--train-size",
        "128",
        "--eval-size",
        "64",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, synthetic_data_dir):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(_tiny_flags(synthetic_data_dir, out)) == 0
    return out


def test_list_names_models_and_presets(capsys):
    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    assert "resnet110" in printed and "cifar10-resnet110" in printed


def test_list_builds_no_network(monkeypatch, capsys):
    """Listing reads the registry's declarations; building every model took seconds (minutes on a loaded machine)."""

    def no_building(*args, **kwargs):
        raise AssertionError("list built a network")

    monkeypatch.setattr(torch.nn.Module, "__init__", no_building)
    assert main(["list"]) == 0
    assert "resnet1202" in capsys.readouterr().out


def test_python_dash_m_works_like_the_script():
    result = subprocess.run([sys.executable, "-m", "stochdepth", "list"], capture_output=True, text=True, check=True)
    assert "resnet1202" in result.stdout


def test_train_prints_the_test_error_it_writes(tmp_path, synthetic_data_dir, capsys):
    out = tmp_path / "run"
    assert main(_tiny_flags(synthetic_data_dir, out)) == 0
    summary = json.loads(RunFolder(out).summary.read_text())
    printed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("test error at best"))
    assert printed == (
        f"test error at best validation (epoch 1): {100 * summary['test_error_at_best_val']:.2f}%; "
        f"final test error: {100 * summary['final_test_error']:.2f}%; run folder: {out}"
    )


def test_eval_reports_the_best_checkpoints_error_on_the_whole_test_set(trained_run, synthetic_data_dir, capsys):
    """The run was evaluated on 64 test images while training; eval counts all 200 and says so."""
    import contextlib

    from stochdepth.data import build_loaders
    from stochdepth.train import load_trained_model
    from stochdepth.train.trainer import error_counts

    assert main(["eval", str(trained_run), "--data-dir", str(synthetic_data_dir)]) == 0
    printed = capsys.readouterr().out
    model, config, _ = load_trained_model(trained_run)
    whole = config.override(data_dir=str(synthetic_data_dir)).data
    whole.eval_size = None
    loader = build_loaders(whole, 32, torch.device("cpu"), 0).test
    wrong, total = error_counts(model, loader, contextlib.nullcontext, False).tolist()
    assert total == 200
    assert f"test error {100 * wrong / total:.2f}% ({wrong} of 200 test images, the whole test set)" in printed


def test_eval_of_a_missing_folder_says_it_does_not_exist(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "no such run folder or checkpoint file" in capsys.readouterr().err


@pytest.mark.parametrize("export_format", ["safetensors", "torchscript", "exported", "onnx"])
def test_export_writes_the_folded_network(trained_run, tmp_path, export_format):
    if export_format == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("the onnx extra is not installed")
    path = tmp_path / f"model.{export_format}"
    assert main(["export", str(trained_run), "--format", export_format, "--out", str(path)]) == 0
    model, _, spec = load_trained_model(trained_run)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = model((x - spec.mean[0]) / spec.std[0])
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask(), "every format gets a new file's usual mode"
    if export_format == "safetensors":
        classifier = stochdepth.load_exported(path)
        assert not any(isinstance(module, StochasticModule) for module in classifier.modules())
        output = classifier(x)
    elif export_format == "torchscript":
        output = torch.jit.load(str(path))(x)
    elif export_format == "exported":
        output = torch.export.load(str(path)).module()(x)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        output = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    torch.testing.assert_close(output.detach(), expected, rtol=1e-4, atol=1e-5)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_load_exported_refuses_files_it_cannot_rebuild_with_one_line(trained_run, tmp_path):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "model.safetensors"
    assert main(["export", str(trained_run), "--format", "safetensors", "--out", str(path)]) == 0
    tensors = load_file(path)
    with safe_open_metadata(path) as metadata:
        spec = metadata["data_spec"]
    cases = {
        "old.safetensors": {"data_spec": spec},
        "hub.safetensors": {"data_spec": spec, "model": json.dumps({"model": "timm/hf-hub:timm/resnet18"})},
        "code.safetensors": {"data_spec": spec, "model": json.dumps({"model": "resnet8", "dropout_rate": "os"})},
        "other.safetensors": {"data_spec": spec, "model": json.dumps({"model": "resnet20"})},
        "fewer.safetensors": {"data_spec": spec, "model": json.dumps({"model": "resnet8"})},
        "detection.safetensors": {"data_spec": spec, "model": json.dumps({"model": "torchvision/deeplabv3_resnet50"})},
        "unknown.safetensors": {"data_spec": spec, "model": json.dumps({"model": "resnet8", "final_survival_prob": 7})},
        "huge.safetensors": {"data_spec": spec, "model": json.dumps({"model": "timm/vit_giant_patch14_224"})},
        "nan.safetensors": {"data_spec": spec, "model": json.dumps({"model": "resnet8"})},
        "int8.safetensors": {"data_spec": spec, "model": json.dumps({"model": "resnet8"})},
        "variance.safetensors": {"data_spec": spec, "model": json.dumps({"model": "resnet8"})},
    }
    messages = {
        "old.safetensors": "no model name in its metadata",
        "hub.safetensors": "only a plain architecture name",
        "code.safetensors": "build options must be numbers",
        "other.safetensors": r"do not fit resnet20 \(72 missing, 0 unexpected tensors\)",
        "detection.safetensors": "no classification model 'deeplabv3_resnet50'",
        "unknown.safetensors": "unknown build option",
        "huge.safetensors": r"do not fit timm/vit_giant_patch14_224 \(\d+ missing",
        "nan.safetensors": "holds non-finite values",
        "int8.safetensors": "holds torch.int8 values where the network has torch.float32",
        "variance.safetensors": "holds negative variances",
    }
    first_weight = next(key for key in tensors if key.endswith("weight"))
    running_var = next(key for key in tensors if key.endswith("running_var"))
    damaged = {
        "nan.safetensors": {first_weight: torch.full_like(tensors[first_weight], math.nan)},
        "int8.safetensors": {first_weight: tensors[first_weight].to(torch.int8)},
        "variance.safetensors": {running_var: -tensors[running_var] - 1},
    }
    messages["fewer.safetensors"] = r"do not fit resnet8 \(1 missing, 0 unexpected tensors\)"
    for name, metadata in cases.items():
        kept = {key: value for key, value in tensors.items() if name != "fewer.safetensors" or key != "stem.0.weight"}
        save_file({**kept, **damaged.get(name, {})}, tmp_path / name, metadata=metadata)
        with pytest.raises(ValueError, match=messages[name]):
            stochdepth.load_exported(tmp_path / name)
    os.mkfifo(tmp_path / "pipe.safetensors")
    with pytest.raises(ValueError, match="not a regular file"):
        stochdepth.load_exported(tmp_path / "pipe.safetensors")  # a FIFO: refused, never opened (no hang)
    with pytest.raises(ValueError, match="not a regular file"):
        stochdepth.load_exported(tmp_path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        stochdepth.load_exported(tmp_path / "junk.safetensors")


@contextlib.contextmanager
def safe_open_metadata(path: os.PathLike):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as source:
        yield source.metadata()


def _bad(argv, capsys) -> str:
    assert main(argv) == 2
    return one_line_error(capsys)


def test_existing_out_without_resume_exits_2(trained_run, synthetic_data_dir, capsys):
    assert "--resume" in _bad(_tiny_flags(synthetic_data_dir, trained_run), capsys)


def test_missing_data_exits_2_naming_the_files(tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    flags = _tiny_flags(tmp_path / "nothing", tmp_path / "run")
    flags[flags.index("fashion-mnist")] = "cifar10"
    assert "data_batch_1" in _bad(flags, capsys)
    assert not (tmp_path / "run").exists()


def test_damaged_checkpoint_exits_2(trained_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    best = RunFolder(copy).checkpoint("best")
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    assert "truncated or corrupted" in _bad(["eval", str(copy)], capsys)


def test_checkpoint_of_another_model_exits_2(trained_run, tmp_path, synthetic_data_dir, capsys):
    other = tmp_path / "other"
    assert main(_tiny_flags(synthetic_data_dir, other, model="resnet20")) == 0
    capsys.readouterr()
    shutil.copy(RunFolder(trained_run).checkpoint("best"), RunFolder(other).checkpoint("best"))
    assert "resnet8" in _bad(["eval", str(other)], capsys)
    shutil.copy(RunFolder(trained_run).checkpoint("last"), RunFolder(other).checkpoint("last"))
    assert "resnet8" in _bad(["train", "--resume", str(other), "--epochs", "2"], capsys)


def test_resume_refuses_other_options(trained_run, capsys):
    assert "only --epochs" in _bad(["train", "--resume", str(trained_run), "--lr", "0.5"], capsys)


@pytest.mark.parametrize(
    ("model", "branches"), [("torchvision/resnet18", 8), ("timm/resnet18", 8), ("timm/vit_tiny_patch16_224", 24)]
)
def test_networks_of_other_libraries_train_resume_eval_and_export(
    model, branches, tmp_path, synthetic_data_dir, capsys
):
    """A ViT gets the data's image size (built for 224 px, it would refuse 28 px images)."""
    if model.startswith("timm/"):
        pytest.importorskip("timm")
    run = tmp_path / "run"
    flags = _tiny_flags(synthetic_data_dir, run, model=model)
    flags[flags.index("--epochs") + 1] = "1"
    assert main(flags) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["model"] == model and len(config["survival_probs"]) == branches
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert main(["eval", str(run), "--data-dir", str(synthetic_data_dir)]) == 0
    assert main(["export", str(run), "--format", "safetensors", "--out", str(tmp_path / "model.safetensors")]) == 0
    assert "stochastic depth:" in capsys.readouterr().out


def test_init_weights_start_from_a_file_and_say_what_fitted(tmp_path, synthetic_data_dir, capsys):
    from safetensors.torch import save_file

    source = stochdepth.create_model("resnet8", num_classes=3, in_channels=1, survival_rule="none")
    with torch.no_grad():
        source.stem[0].weight.fill_(0.125)
    save_file({name: tensor.contiguous() for name, tensor in source.state_dict().items()}, tmp_path / "w.safetensors")
    run = tmp_path / "run"
    assert main([*_tiny_flags(synthetic_data_dir, run), "--init-weights", str(tmp_path / "w.safetensors")]) == 0
    printed = capsys.readouterr().out
    assert "initial weights from" in printed and "kept new: head.2.bias, head.2.weight" in printed
    assert main([*_tiny_flags(synthetic_data_dir, tmp_path / "bad"), "--init-weights", str(tmp_path / "none")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_network_without_recognised_blocks_is_one_line_naming_what_was_found(tmp_path, capsys):
    flags = ["train", "--model", "torchvision/squeezenet1_0", "--out", str(tmp_path / "run"), "--epochs", "1"]
    assert main(flags) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "no residual block found in SqueezeNet" in error
    assert not (tmp_path / "run").exists()


def test_a_timm_model_without_timm_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm":
            raise ImportError("no timm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(ValueError, match=r"pip install 'stochdepth\[timm\]'"):
        stochdepth.create_model("timm/resnet18")


def test_a_dataset_typo_gets_a_suggestion(tmp_path, capsys):
    assert main(["train", "--model", "resnet8", "--dataset", "fashion-mnst", "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "did you mean fashion-mnist" in error and not (tmp_path / "run").exists()


def test_the_library_names_config_fields_and_the_command_line_its_flags(tmp_path, synthetic_data_dir, capsys):
    from stochdepth.cli import as_flags
    from stochdepth.train import train

    config = stochdepth.config.TrainConfig().override(
        model="resnet8", dataset="fashion-mnist", data_dir=str(synthetic_data_dir), init_weights="/none/w.pt"
    )
    with pytest.raises(ValueError, match="model.init_weights /none/w.pt: no such file") as raised:
        train(config)
    assert "--" not in str(raised.value)
    assert main([*_tiny_flags(synthetic_data_dir, tmp_path / "run"), "--init-weights", "/none/w.pt"]) == 2
    assert "error: --init-weights /none/w.pt: no such file" in capsys.readouterr().err
    assert as_flags("lower optim.lr, or set run.on_nonfinite; model.safetensors and run.lock stay") == (
        "lower --lr, or set --on-nonfinite; model.safetensors and run.lock stay"
    )
    assert as_flags("resume the run in runs/a") == "resume with: stochdepth train --resume runs/a"


def test_the_library_evaluates_a_run_on_the_whole_test_set_as_eval_prints(trained_run, synthetic_data_dir, capsys):
    from stochdepth.train import evaluate_test_set

    wrong, total, dataset = evaluate_test_set(trained_run, data_dir=str(synthetic_data_dir))
    assert (total, dataset) == (200, "fashion-mnist") and 0 <= wrong <= total
    assert main(["eval", str(trained_run), "--data-dir", str(synthetic_data_dir)]) == 0
    assert f"({wrong:,} of {total:,} test images, the whole test set)" in capsys.readouterr().out


def test_eval_with_recalibrated_batchnorm_evaluates_with_update_bn_s_statistics_and_writes_nothing(
    trained_run, synthetic_data_dir, capsys, monkeypatch
):
    from torch.optim.swa_utils import update_bn

    from stochdepth.data import build_loaders
    from stochdepth.train import trainer

    evaluated = {}
    real_error_counts = trainer.error_counts

    def recording(model, *args, **kwargs):
        evaluated.update({name: value.clone() for name, value in model.named_buffers()})
        return real_error_counts(model, *args, **kwargs)

    monkeypatch.setattr(trainer, "error_counts", recording)
    before = {path: path.read_bytes() for path in trained_run.rglob("*") if path.is_file()}
    flags = ["--data-dir", str(synthetic_data_dir), "--recalibrate-batchnorm", "64"]
    assert main(["eval", str(trained_run), *flags]) == 0
    printed = capsys.readouterr().out
    model, config, _ = load_trained_model(trained_run, "best")
    stored = {name: value.clone() for name, value in model.named_buffers()}
    data = dataclasses.replace(config.data, data_dir=str(synthetic_data_dir), eval_size=None)
    loaders = build_loaders(data, config.optim.batch_size, torch.device("cpu"), config.run.seed, recalibration_size=64)
    with stochdepth.run_every_block(model):
        update_bn(loaders.recalibration, model)
    statistics = [name for name in stored if name.endswith(("running_mean", "running_var"))]
    for name in statistics:
        torch.testing.assert_close(evaluated[name], dict(model.named_buffers())[name], rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.allclose(evaluated[name], stored[name]) for name in statistics), "not the stored statistics"
    wrong = int(real_error_counts(model.eval(), loaders.test, contextlib.nullcontext, False)[0])
    expected = f"({wrong:,} of 200 test images, the whole test set, BatchNorm recalibrated over 64 training images)"
    assert expected in printed
    assert {path: path.read_bytes() for path in trained_run.rglob("*") if path.is_file()} == before


def test_recalibrate_batchnorm_reaches_config_json_and_the_loaded_configuration(tmp_path, synthetic_data_dir):
    out = tmp_path / "run"
    assert main([*_tiny_flags(synthetic_data_dir, out), "--recalibrate-batchnorm", "48"]) == 0
    assert json.loads(RunFolder(out).config.read_text())["run"]["recalibrate_batchnorm"] == 48
    _, config, _ = load_trained_model(out, "last")
    assert config.run.recalibrate_batchnorm == 48


def test_time_schedule_flags_reach_config_json_and_a_loaded_run_evaluates_at_its_last_step(
    tmp_path, synthetic_data_dir
):
    out = tmp_path / "run"
    flags = ["--time-schedule", "early", "--time-schedule-fraction", "0.5", "--survival-rule", "uniform"]
    assert main([*_tiny_flags(synthetic_data_dir, out), *flags]) == 0
    model_config = json.loads(RunFolder(out).config.read_text())["model"]
    assert (model_config["time_schedule"], model_config["time_schedule_fraction"]) == ("early", 0.5)
    model, config, _ = load_trained_model(out, "last")
    assert config.model.time_schedule == "early"
    assert stochdepth.survival_probs(model) == [0.5] * 3
    assert stochdepth.survival_probs_in_force(model) == [1.0] * 3, "early: no dropping in the run's second half"
