"""Training end to end: a real short run, the run folder contract, exact resume, extension."""

import contextlib
import csv
import json
import math
import re

import pytest
import torch

from stochdepth.train import resume, train
from stochdepth.train.run_folder import METRIC_KEYS, RunFolder
from tests.conftest import REAL_FASHION_MNIST

TIMING_KEYS = {"epoch_seconds", "images_per_second"}


@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist")
@pytest.mark.slow
def test_two_epochs_on_a_fashion_mnist_subset_beat_chance_by_far(tmp_path, tiny_config):
    config = tiny_config.override(
        data_dir=str(REAL_FASHION_MNIST.parent), train_size=4000, eval_size=1000, batch_size=64, epochs=2, seed=0
    )
    summary = train(config, out=tmp_path / "run")
    assert summary["test_error_at_best_val"] < 0.6
    assert summary["final_test_error"] < 0.6


def test_run_folder_holds_the_contract(tmp_path, tiny_config):
    summary = train(tiny_config, out=tmp_path / "run")
    folder = RunFolder(tmp_path / "run")
    records = folder.read_metrics()
    assert len(records) == 3
    assert all(set(METRIC_KEYS) <= set(record) for record in records)
    assert [record["epoch"] for record in records] == [1.0, 2.0, 3.0]
    assert [record["iteration"] for record in records] == [8, 16, 24]
    with open(folder.metrics_table, newline="") as table:
        rows = list(csv.DictReader(table))
    assert list(rows[0]) == list(METRIC_KEYS) and len(rows) == 3, "metrics.csv: one row per evaluation"
    assert [float(row["val_error"]) for row in rows] == [record["val_error"] for record in records]
    assert all(0 <= record["val_error"] <= 1 and 0 <= record["test_error"] <= 1 for record in records)
    # 24 iterations: the drops come at iterations 12 and 18 (the lr of each epoch's last step).
    assert [record["lr"] for record in records] == pytest.approx([0.1, 0.01, 0.001])
    best = min(records, key=lambda record: record["val_error"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["best_val_error"] == best["val_error"]
    assert summary["test_error_at_best_val"] == best["test_error"]
    assert summary["final_test_error"] == records[-1]["test_error"]
    assert summary["train_seconds"] == pytest.approx(sum(record["epoch_seconds"] for record in records))
    assert json.loads(folder.summary.read_text()) == summary
    config = json.loads(folder.config.read_text())
    assert config["model"]["survival_rule"] == "linear" and config["model"]["drop_mode"] == "batch"
    assert config["environment"]["torch"] == torch.__version__
    spec = config["data_spec"]
    assert {key: spec[key] for key in ("num_classes", "in_channels", "image_size")} == {
        "num_classes": 10,
        "in_channels": 1,
        "image_size": 28,
    }
    state = torch.load(folder.checkpoint("last"), weights_only=True)
    assert state["data_spec"] == spec and state["config"]["model"] == config["model"]
    assert config["model"]["final_survival_prob"] == 0.5
    assert folder.checkpoint("last").is_file() and folder.checkpoint("best").is_file()
    expected_blocks = records[0]["expected_active_blocks"]
    assert expected_blocks == pytest.approx(1 - 0.5 / 3 + 1 - 1 / 3 + 0.5)
    assert all(0 <= record["mean_active_blocks"] <= 3 for record in records)


def _final_weights(path) -> dict[str, torch.Tensor]:
    return torch.load(RunFolder(path).checkpoint("last"), weights_only=True)["model"]


def _without_timings(records: list[dict]) -> list[dict]:
    return [{key: value for key, value in record.items() if key not in TIMING_KEYS} for record in records]


@pytest.mark.parametrize(
    ("drop_mode", "checkpoint_every_minutes", "resumed_from", "time_schedule", "recalibrate_batchnorm"),
    [
        ("batch", None, 8, None, None),
        ("sample", None, 8, None, None),
        ("batch", 0, 10, None, None),
        ("batch", 0, 10, "ramp", None),
        ("batch", 0, 10, None, 48),
    ],
    ids=[
        "batch-epoch-checkpoint",
        "sample-epoch-checkpoint",
        "batch-mid-epoch-checkpoint",
        "mid-ramp-checkpoint",
        "recalibrated-mid-epoch-checkpoint",
    ],
)
def test_an_interrupted_run_resumes_to_exactly_the_uninterrupted_result(
    tmp_path,
    tiny_config,
    monkeypatch,
    drop_mode,
    checkpoint_every_minutes,
    resumed_from,
    time_schedule,
    recalibrate_batchnorm,
):
    config = tiny_config.override(
        drop_mode=drop_mode,
        eval_every_iters=5,
        checkpoint_every_minutes=checkpoint_every_minutes,
        time_schedule=time_schedule,
        time_schedule_fraction=0.8,
        recalibrate_batchnorm=recalibrate_batchnorm,
    )
    train(config, out=tmp_path / "straight")

    calls = {"count": 0}
    real_cross_entropy = torch.nn.functional.cross_entropy

    def crash_mid_epoch_two(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 8 + 3:
            raise RuntimeError("simulated crash")
        return real_cross_entropy(*args, **kwargs)

    monkeypatch.setattr("stochdepth.train.trainer.F.cross_entropy", crash_mid_epoch_two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, out=tmp_path / "interrupted")
    monkeypatch.setattr("stochdepth.train.trainer.F.cross_entropy", real_cross_entropy)
    assert len(RunFolder(tmp_path / "interrupted").read_metrics()) == 2
    last = torch.load(RunFolder(tmp_path / "interrupted").checkpoint("last"), weights_only=True)
    assert last["iteration"] == resumed_from
    summary = resume(tmp_path / "interrupted")

    straight, resumed = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "interrupted")
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    straight_records = RunFolder(tmp_path / "straight").read_metrics()
    resumed_records = RunFolder(tmp_path / "interrupted").read_metrics()
    assert _without_timings(resumed_records) == _without_timings(straight_records)
    assert [record["iteration"] for record in resumed_records] == [5, 10, 15, 20, 24]
    with open(RunFolder(tmp_path / "interrupted").metrics_table, newline="") as table:
        iterations = [int(row["iteration"]) for row in csv.DictReader(table)]
    assert iterations == [5, 10, 15, 20, 24], "metrics.csv follows the records kept on resume"
    straight_summary = json.loads(RunFolder(tmp_path / "straight").summary.read_text())
    assert {k: v for k, v in summary.items() if k != "train_seconds"} == {
        k: v for k, v in straight_summary.items() if k != "train_seconds"
    }


def test_a_time_schedule_is_recorded_and_the_expected_depth_follows_it(tmp_path, tiny_config):
    config = tiny_config.override(time_schedule="late", time_schedule_fraction=0.5, eval_every_iters=4)
    train(config, out=tmp_path / "run")
    folder = RunFolder(tmp_path / "run")
    model_config = json.loads(folder.config.read_text())["model"]
    assert (model_config["time_schedule"], model_config["time_schedule_fraction"]) == ("late", 0.5)
    records = folder.read_metrics()
    full = 1 - 0.5 / 3 + 1 - 1 / 3 + 0.5
    iterations = [record["iteration"] for record in records]
    assert iterations == [4, 8, 12, 16, 20, 24]
    # 24 steps, late from step 12: every block runs before, the linear schedule after
    assert [record["expected_active_blocks"] for record in records] == pytest.approx([3, 3, 3, full, full, full])
    assert [record["mean_active_blocks"] for record in records[:3]] == [3, 3, 3]
    state = torch.load(folder.checkpoint("last"), weights_only=True)
    assert state["random_states"]["gates"]["steps_taken"] == 24


def test_resume_with_more_epochs_extends_a_finished_run_and_replans_the_schedule(tmp_path, tiny_config):
    train(tiny_config.override(epochs=2), out=tmp_path / "run")
    summary = resume(tmp_path / "run", epochs=4)
    records = RunFolder(tmp_path / "run").read_metrics()
    assert [record["epoch"] for record in records] == [1.0, 2.0, 3.0, 4.0]
    # 16 iterations planned (drops at 8 and 12); re-planned for 32 (drops at 16 and 24), epoch 3 is at 0.01 again.
    assert [record["lr"] for record in records] == pytest.approx([0.1, 0.001, 0.01, 0.001])
    assert summary["epochs"] == 4
    assert json.loads(RunFolder(tmp_path / "run").config.read_text())["optim"]["epochs"] == 4


def test_bf16_autocast_channels_last_and_sample_mode_train_on_cpu(tmp_path, tiny_config):
    config = tiny_config.override(precision="bf16", channels_last=True, drop_mode="sample", epochs=2)
    train(config, out=tmp_path / "run")
    records = RunFolder(tmp_path / "run").read_metrics()
    assert all(math.isfinite(record["train_loss"]) for record in records)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    realised = [record["mean_active_blocks"] for record in records]
    assert all(0 < value < 3 for value in realised) and any(value != round(value) for value in realised)


def test_a_non_empty_run_folder_is_refused(tmp_path, tiny_config):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty; resume the run in .* or choose another run.out"):
        train(tiny_config, out=tmp_path / "run")
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_without_a_terminal_progress_is_a_plain_line_at_an_interval(tmp_path, tiny_config, monkeypatch, capsys):
    monkeypatch.setattr("stochdepth.train.progress.Progress.__init__.__defaults__", (0.0,))
    train(tiny_config.override(epochs=1), out=tmp_path / "run", progress=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch 1/1: batch")]
    assert [line.split()[3] for line in lines] == [f"{step}/8" for step in range(1, 9)]
    assert all("loss" in line and "\r" not in line and "\x1b" not in line for line in lines)
    assert all(re.search(r"  error \d+\.\d\d%  ", line) for line in lines), "errors for people are in percent"


def test_testing_once_gives_the_best_validation_weights_test_error_of_an_every_eval_run(tmp_path, tiny_config):
    """--no-test-every-eval: the same training, the test set evaluated once, with the best-validation weights."""
    every = train(tiny_config, out=tmp_path / "every")
    once = train(tiny_config.override(test_every_eval=False), out=tmp_path / "once")
    records = RunFolder(tmp_path / "once").read_metrics()
    assert all(math.isnan(record["test_error"]) for record in records)
    assert [record["val_error"] for record in records] == [
        record["val_error"] for record in RunFolder(tmp_path / "every").read_metrics()
    ]
    assert once["best_epoch"] == every["best_epoch"]
    assert once["test_error_at_best_val"] == every["test_error_at_best_val"]
    assert once["final_test_error"] is None

    from stochdepth.analysis.runs import find_runs

    runs, _ = find_runs([tmp_path / "once"])
    assert runs[0].test_error_at_best_val() == every["test_error_at_best_val"]

    from stochdepth.analysis.report import write_report

    report, _ = write_report([tmp_path / "once"], tmp_path / "report")
    assert f"| {100 * every['test_error_at_best_val']:.2f} |" in report.read_text()


def test_recalibrating_batchnorm_changes_what_evaluation_measures_and_nothing_in_training(tmp_path, tiny_config):
    """--recalibrate-batchnorm N: errors and best.pt with update_bn's statistics over N images, every block running."""
    from torch.optim.swa_utils import update_bn

    import stochdepth
    from stochdepth.data import build_loaders
    from stochdepth.train.api import load_trained_model
    from stochdepth.train.trainer import error_rate

    config = tiny_config.override(final_survival_prob=0.2, epochs=1)
    train(config, out=tmp_path / "as-trained")
    train(config.override(recalibrate_batchnorm=80), out=tmp_path / "recalibrated")
    (as_trained,), (recalibrated,) = (
        RunFolder(tmp_path / run).read_metrics() for run in ("as-trained", "recalibrated")
    )
    training_keys = {"train_loss", "train_error", "mean_active_blocks", "iteration"}
    assert {key: as_trained[key] for key in training_keys} == {key: recalibrated[key] for key in training_keys}
    last = _final_weights(tmp_path / "recalibrated")
    assert all(torch.equal(value, _final_weights(tmp_path / "as-trained")[name]) for name, value in last.items())

    model, saved_config, _ = load_trained_model(tmp_path / "recalibrated", "last", "cpu")
    assert saved_config.run.recalibrate_batchnorm == 80, "config.json records it"
    loaders = build_loaders(saved_config.data, 32, torch.device("cpu"), config.run.seed, recalibration_size=80)
    plain = contextlib.nullcontext
    assert as_trained["val_error"] == error_rate(model, loaders.val, plain, False), "last.pt: statistics as trained"
    with stochdepth.run_every_block(model):
        update_bn(loaders.recalibration, model)
    model.eval()
    assert recalibrated["val_error"] == error_rate(model, loaders.val, plain, False)
    assert recalibrated["test_error"] == error_rate(model, loaders.test, plain, False)
    best = torch.load(RunFolder(tmp_path / "recalibrated").checkpoint("best"), weights_only=True)["model"]
    statistics = [name for name in best if name.endswith(("running_mean", "running_var"))]
    for name in statistics:
        torch.testing.assert_close(best[name], model.state_dict()[name], rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.allclose(best[name], last[name]) for name in statistics), "best.pt keeps other statistics"


def test_testing_once_needs_a_run_folder(tiny_config):
    with pytest.raises(ValueError, match="needs one process and a run folder"):
        train(tiny_config.override(test_every_eval=False), out=None)


def test_epoch_lines_give_the_time_left_and_a_resume_says_where_it_starts(tmp_path, tiny_config, capsys):
    train(tiny_config.override(epochs=2), out=tmp_path / "run", progress=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    assert "of training left" in lines[0] and "of training left" not in lines[1]
    records = RunFolder(tmp_path / "run").read_metrics()
    for line, record in zip(lines, records):
        errors = "  ".join(f"{name} error {100 * record[f'{name}_error']:.2f}%" for name in ("train", "val", "test"))
        assert errors in line, "errors for people are in percent"
    resume(tmp_path / "run", epochs=3, progress=False)
    printed = capsys.readouterr().out
    assert "last.pt at epoch 3 of 3, iteration 16" in printed


def test_evaluation_shows_progress_lines_when_it_takes_long(monkeypatch, capsys):
    from stochdepth.train import progress as progress_module
    from stochdepth.train.progress import Progress
    from stochdepth.train.trainer import error_counts

    monkeypatch.setattr(progress_module, "_silent", False)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    loader = [(torch.randn(2, 4), torch.tensor([0, 1])) for _ in range(3)]
    progress = Progress(len(loader), 0, "evaluating (test set)", bar=False, line_every=0.0)
    wrong, total = error_counts(model, loader, contextlib.nullcontext, False, progress).tolist()
    assert 0 <= wrong <= total == 6
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"evaluating (test set): batch {batch}/3  " for batch in (1, 2, 3)]


def test_a_windows_loss_sum_does_not_depend_on_how_it_was_split():
    """Two ranks' partial sums gathered at a checkpoint, then continued, equal the uninterrupted sums exactly."""
    from stochdepth.train.run_state import Window

    generator = torch.Generator().manual_seed(0)
    losses = (torch.rand(400, generator=generator) * 3).float()
    whole, first, second = (Window.empty(torch.device("cpu"), 0.1) for _ in range(3))
    for index, loss in enumerate(losses):
        whole.add(loss, torch.tensor(1), 64)
        (first if index % 2 == 0 else second).add(loss, torch.tensor(1), 64)
    gathered = first.loss_sum + second.loss_sum
    assert gathered.item() == whole.loss_sum.item()
    in_float32 = sum(((loss * 64) for loss in losses[::2]), torch.tensor(0.0)) + sum(
        ((loss * 64) for loss in losses[1::2]), torch.tensor(0.0)
    )
    assert in_float32.item() != whole.loss_sum.item(), "float32 sums would differ (what this guards against)"
