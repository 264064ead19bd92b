"""Data-parallel training on 2 gloo ranks (CPU): the same run as one process, and its failures.

One spawn runs every case (``distributed_ranks.scenarios``); the tests below compare what
each rank saw with each other and with single-process runs of the same configuration.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stochdepth.data import build_loaders
from stochdepth.data.shard import WHOLE
from stochdepth.train import load_trained_model, resume, train
from stochdepth.train.checkpoint import CheckpointError, load_checkpoint
from stochdepth.train.run_folder import RunFolder
from stochdepth.train.trainer import error_rate
from tests.train.distributed_ranks import plain_config, recorded_training, run_ranks, scenarios, sync_batchnorm_run

TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(scope="module")
def two_ranks(synthetic_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("ranks")
    return out, run_ranks(functools.partial(scenarios, data_dir=synthetic_data_dir), out)


def _case(two_ranks: tuple[Path, list[dict]], name: str) -> list[dict]:
    results = [rank_results[name] for rank_results in two_ranks[1]]
    for rank, result in enumerate(results):
        assert "error" not in result, f"rank {rank} failed in {name}: {result}"
    return results


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def _assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], **TOLERANCE, msg=name)


def test_constant_depth_on_two_ranks_ends_with_the_weights_and_errors_of_one_process(
    two_ranks, synthetic_data_dir, tmp_path
):
    _case(two_ranks, "constant")
    single = plain_config(synthetic_data_dir, survival_rule="none")
    train(single, out=tmp_path / "one")
    _assert_same_weights(_weights(two_ranks[0] / "constant"), _weights(tmp_path / "one"))
    ranks_records = RunFolder(two_ranks[0] / "constant").read_metrics()
    one_records = RunFolder(tmp_path / "one").read_metrics()
    assert len(ranks_records) == len(one_records) == 2
    for ranks, one in zip(ranks_records, one_records):
        assert (ranks["val_error"], ranks["test_error"]) == (one["val_error"], one["test_error"])
        assert ranks["train_error"] == one["train_error"]
        assert math.isclose(ranks["train_loss"], one["train_loss"], rel_tol=1e-5)


def test_a_rank_leaves_the_group_training_joined_when_it_exits(two_ranks):
    """A gloo group alive in the interpreter's teardown can abort the rank (torchrun then kills the others)."""
    out, _ = two_ranks
    assert [(out / f"rank{rank}-group-at-exit.txt").read_text() for rank in (0, 1)] == ["False", "False"]


def test_batch_mode_ranks_draw_the_same_gates_and_hold_the_same_weights_after_every_step(two_ranks, synthetic_data_dir):
    first, second = (result["steps"] for result in _case(two_ranks, "batch"))
    assert len(first) == len(second) == 16
    assert [step["survives"] for step in first] == [step["survives"] for step in second]
    assert any(not all(step["survives"]) for step in first), "no block was dropped: the case tests nothing"
    for mine, theirs in zip(first, second):
        for name, value in mine["params"].items():
            assert torch.equal(value, theirs["params"][name]), name
    one = recorded_training(plain_config(synthetic_data_dir, final_survival_prob=0.5, weight_decay=0.01), None)
    assert [step["survives"] for step in one["steps"]] == [step["survives"] for step in first]
    _assert_same_weights(first[-1]["params"], one["steps"][-1]["params"])


def test_a_dropped_blocks_weights_still_move_under_weight_decay_on_every_rank(two_ranks):
    steps = _case(two_ranks, "batch")[1]["steps"]
    moved = 0
    for before, after in itertools.pairwise(steps):
        for block, survives in enumerate(after["survives"]):
            if not survives:
                name = f"2.{block}.branch.0.weight"
                assert not torch.equal(before["params"][name], after["params"][name]), name
                moved += 1
    assert moved > 0


def test_sample_mode_with_empty_shares_does_not_hang_and_never_runs_a_branch_on_one_row(two_ranks):
    first, second = (result["steps"] for result in _case(two_ranks, "sample"))

    def rows_run(step: dict, block: int) -> int:
        rows, survives = step["rows"][block], step["survives"][block]
        return rows if rows is not None else (step["local_batch"] if survives else 0)

    uneven = [
        (index, block)
        for index, (mine, theirs) in enumerate(zip(first, second))
        for block in range(3)
        if (rows_run(mine, block) == 0) != (rows_run(theirs, block) == 0)
    ]
    assert uneven, "no step had a block with rows on one rank and none on the other"
    assert all(rows_run(step, block) != 1 for step in first + second for block in range(3))
    for mine, theirs in zip(first, second):
        for name, value in mine["params"].items():
            assert torch.equal(value, theirs["params"][name]), name


def test_evaluation_on_two_ranks_equals_one_process_evaluating_the_saved_weights(two_ranks):
    summaries = _case(two_ranks, "batchnorm")
    run = two_ranks[0] / "batchnorm"
    record = RunFolder(run).read_metrics()[-1]
    model, config, _ = load_trained_model(run, "last")
    loaders = build_loaders(config.data, config.optim.batch_size, torch.device("cpu"), config.run.seed)
    assert record["val_error"] == error_rate(model, loaders.val, contextlib.nullcontext, False)
    assert record["test_error"] == error_rate(model, loaders.test, contextlib.nullcontext, False)
    timeless = [{key: value for key, value in summary.items() if key != "train_seconds"} for summary in summaries]
    assert timeless[0] == timeless[1], "every rank returns the same summary"


def test_two_ranks_recalibrate_batchnorm_as_one_process_does_over_the_same_images(two_ranks):
    """Each rank recalibrates over the same first images (not its shard): statistics and errors as one process's."""
    from torch.optim.swa_utils import update_bn

    import stochdepth

    summaries = _case(two_ranks, "recalibrated")
    run = two_ranks[0] / "recalibrated"
    record = RunFolder(run).read_metrics()[-1]
    model, config, _ = load_trained_model(run, "last")
    loaders = build_loaders(config.data, config.optim.batch_size, torch.device("cpu"), config.run.seed, WHOLE, 40)
    with stochdepth.run_every_block(model):
        update_bn(loaders.recalibration, model)
    model.eval()
    assert record["val_error"] == error_rate(model, loaders.val, contextlib.nullcontext, False)
    assert record["test_error"] == error_rate(model, loaders.test, contextlib.nullcontext, False)
    best = load_checkpoint(run / "checkpoints" / "best.pt")["model"]
    for name, value in model.state_dict().items():
        torch.testing.assert_close(best[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert summaries[0]["best_val_error"] == summaries[1]["best_val_error"] == record["val_error"]


def test_a_checkpoint_written_by_two_ranks_resumes_on_one_process_as_its_own_would(
    two_ranks, synthetic_data_dir, tmp_path, capsys
):
    _case(two_ranks, "constant")
    shutil.copytree(two_ranks[0] / "constant", tmp_path / "copy")
    capsys.readouterr()
    resume(tmp_path / "copy", epochs=3)
    assert "checkpointed by 2 process(es) on 1" in capsys.readouterr().out
    train(plain_config(synthetic_data_dir, survival_rule="none"), out=tmp_path / "one")
    resume(tmp_path / "one", epochs=3)
    _assert_same_weights(_weights(tmp_path / "copy"), _weights(tmp_path / "one"))


def test_ranks_whose_launcher_is_gone_stop_together_with_a_checkpoint(two_ranks):
    for result in (rank_results["launcher_gone"] for rank_results in two_ranks[1]):
        assert result["error"] == "TrainingStopped"
        assert result["message"].startswith("stopped by SIGHUP after iteration 5 (in epoch 1)")
    assert load_checkpoint(two_ranks[0] / "orphan" / "checkpoints" / "last.pt")["iteration"] == 5


def test_a_global_batch_that_does_not_divide_by_the_ranks_is_refused_on_every_rank(two_ranks):
    for result in (rank_results["batch_not_dividing"] for rank_results in two_ranks[1]):
        assert result["error"] == "ValueError"
        assert "optim.batch_size 15 (the global batch) does not divide by the 2 processes" in result["message"]
    assert not (two_ranks[0] / "odd").exists(), "a failed start leaves no folder"


def test_a_signal_on_one_rank_stops_every_rank_at_the_same_step_with_a_checkpoint(two_ranks):
    for result in (rank_results["signal_on_one_rank"] for rank_results in two_ranks[1]):
        assert result["error"] == "TrainingStopped"
        assert result["message"].startswith("stopped by SIGTERM after iteration 5 (in epoch 1)")
    state = load_checkpoint(two_ranks[0] / "signal" / "checkpoints" / "last.pt")
    assert (state["iteration"], state["random_states"]["data_position"]) == (5, 5)


def test_a_signal_on_one_rank_during_an_evaluation_stops_every_rank_there_and_owes_it(two_ranks):
    for result in (rank_results["signal_in_evaluation"] for rank_results in two_ranks[1]):
        assert result["error"] == "TrainingStopped"
        assert result["message"].startswith("stopped by SIGTERM after iteration")
    state = load_checkpoint(two_ranks[0] / "signal-eval" / "checkpoints" / "last.pt")
    assert state["evaluation_owed"] is True
    assert (
        not (two_ranks[0] / "signal-eval" / "metrics.jsonl").exists()
        or not RunFolder(two_ranks[0] / "signal-eval").read_metrics()
    ), "the stopped evaluation wrote no record"


def test_a_rank_failing_at_start_stops_every_rank_with_its_rank_named(two_ranks):
    rank0, rank1 = (rank_results["rank_fails_at_start"] for rank_results in two_ranks[1])
    assert rank1 == {"error": "DataMissing", "message": "Fashion-MNIST not found on this node"}
    assert rank0["error"] == "PeerFailed"
    assert rank0["message"] == "rank 1 failed at start: DataMissing: Fashion-MNIST not found on this node"
    assert not (two_ranks[0] / "failed-start").exists()


# The command line under torchrun ---------------------------------------------------------

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _torchrun(*argv: str) -> subprocess.Popen:
    """``torchrun --nproc_per_node 2 -m stochdepth ARGV`` in its own process group (a node: killed as a whole)."""
    return subprocess.Popen(
        [*TORCHRUN, "-m", "stochdepth", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _resnet8_flags(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        *("--model", "resnet8", "--dataset", "fashion-mnist", "--data-dir", str(data_dir)),
        *("--train-size", "256", "--eval-size", "40", "--batch-size", "32", "--epochs", "2", "--seed", "2"),
        *("--device", "cpu", "--out", str(out), *extra),
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.slow
def test_torchrun_with_device_cuda_on_a_gloo_only_machine_says_so_with_the_rank(synthetic_data_dir, tmp_path):
    """Every rank refuses; torchrun stops the others as soon as the first exits, so not every rank may get to print.

    Each error line that does appear names its rank, and none is left without one.
    """
    flags = _resnet8_flags(synthetic_data_dir, tmp_path / "run")
    process = _torchrun(*flags[: flags.index("--device")], "--device", "cuda", "--out", str(tmp_path / "run"))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    error_lines = [line for line in stderr.splitlines() if "stochdepth: error:" in line]
    assert error_lines, stderr
    refusal = "stochdepth: error: device cuda asked for, but this machine has no usable CUDA device"
    assert {line.partition(refusal)[::2] for line in error_lines} <= {("rank 0: ", ""), ("rank 1: ", "")}, stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_killed_two_rank_run_restarted_with_auto_resume_ends_like_an_uninterrupted_one(synthetic_data_dir, tmp_path):
    every_step = ("--checkpoint-every-minutes", "0", "--auto-resume")
    reference = _torchrun(*_resnet8_flags(synthetic_data_dir, tmp_path / "reference", *every_step))
    stdout, stderr = reference.communicate(timeout=300)
    assert reference.returncode == 0, stderr
    assert stdout.count("test error at best validation") == 1, "rank 0 alone prints the result"

    killed = tmp_path / "killed"
    command = _resnet8_flags(synthetic_data_dir, killed, *every_step)
    process = _torchrun(*command)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        with contextlib.suppress(CheckpointError):
            state = load_checkpoint(killed / "checkpoints" / "last.pt")
            if state["epoch"] == 1 and state["random_states"]["data_position"] >= 2:
                break
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    while RunFolder(killed).is_locked():  # the orphaned ranks notice and stop with a checkpoint
        assert time.monotonic() < deadline, "the ranks of the killed launcher did not stop"
        time.sleep(0.05)
    assert not (killed / "summary.json").exists(), "the run was killed before its end"

    restarted = _torchrun(*command)
    _, stderr = restarted.communicate(timeout=300)
    assert restarted.returncode == 0, stderr
    _assert_identical_runs(tmp_path / "reference", killed)


def _assert_identical_runs(first: Path, second: Path) -> None:
    weights = [_weights(run) for run in (first, second)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    timing = {"epoch_seconds", "images_per_second"}
    records = [
        [{key: value for key, value in record.items() if key not in timing} for record in RunFolder(run).read_metrics()]
        for run in (first, second)
    ]
    assert records[0] == records[1] and len(records[0]) == 2


def test_sync_batchnorm_is_refused_on_the_cpu_and_in_sample_mode(tiny_config):
    with pytest.raises(ValueError, match="run.sync_batchnorm needs CUDA"):
        train(tiny_config.override(sync_batchnorm=True))
    with pytest.raises(ValueError, match="run.sync_batchnorm works with model.drop_mode batch or subset"):
        train(tiny_config.override(sync_batchnorm=True, drop_mode="sample"))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (NCCL, one GPU per rank)")
def test_sync_batchnorm_gives_every_rank_the_statistics_of_the_global_batch(synthetic_data_dir, tmp_path):
    first, second = (
        result["steps"]
        for result in run_ranks(functools.partial(sync_batchnorm_run, data_dir=synthetic_data_dir), tmp_path)
    )
    assert len(first) == len(second) == 4
    for mine, theirs in zip(first, second):
        for name, value in mine["params"].items():
            torch.testing.assert_close(value, theirs["params"][name], msg=name)


def test_commands_other_than_train_are_refused_under_torchrun_naming_the_rank(monkeypatch, capsys, tmp_path):
    from stochdepth.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 2
    assert capsys.readouterr().err == (
        "rank 1: stochdepth: error: under torchrun only 'train' runs; start 'stochdepth report' as one process "
        "(a sweep's runs can each be trained with torchrun ... -m stochdepth train)\n"
    )
    assert not (tmp_path / "report").exists()


def test_an_unexpected_error_under_torchrun_reaches_torchrun_s_failure_summary(monkeypatch, tmp_path):
    from stochdepth import cli

    def broken(args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))
    monkeypatch.setitem(cli.COMMANDS, "train", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["train"])
    assert "RuntimeError: a bug" in (tmp_path / "error.json").read_text()


@pytest.mark.parametrize(
    "environment",
    [{"WORLD_SIZE": "two", "RANK": "0"}, {"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "2", "LOCAL_RANK": "-1"}],
)
def test_a_malformed_torchrun_environment_is_one_line_and_exit_2(
    environment, synthetic_data_dir, tmp_path, monkeypatch, capsys
):
    from stochdepth.cli import main

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(_resnet8_flags(synthetic_data_dir, tmp_path / "run")) == 2
    error = capsys.readouterr().err
    assert error.startswith("stochdepth: error: torchrun's environment must") and error.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_silencing_a_rank_leaves_pythons_warning_filters_alone(monkeypatch):
    import warnings

    from stochdepth.train import progress

    monkeypatch.setattr(progress, "_silent", False)
    before = list(warnings.filters)
    progress.silence()
    assert progress._silent and list(warnings.filters) == before
    with pytest.warns(UserWarning, match="still shown"):
        warnings.warn("still shown", UserWarning, stacklevel=1)
