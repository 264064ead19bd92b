"""Run-folder rules: nothing strands a user, nothing is lost or clobbered, nothing is written through a link."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stochdepth.cli import main
from stochdepth.data import DataError
from stochdepth.train import resume, train
from stochdepth.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stochdepth.train.run_folder import RunFolder, RunFolderError


def _files(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_a_run_killed_before_its_first_checkpoint_restarts_from_the_beginning(tmp_path, tiny_config):
    train(tiny_config.override(epochs=1), out=tmp_path / "straight")
    run = RunFolder(tmp_path / "run")
    train(tiny_config.override(epochs=1), out=run.path)
    run.checkpoint("last").unlink()
    run.checkpoint("best").unlink()
    (run.checkpoints / ".last.pt.999999.tmp").write_bytes(b"half a checkpoint")
    run.summary.unlink()
    assert len(run.read_metrics()) == 1
    summary = resume(run.path)
    assert summary["iterations"] == 8
    assert len(run.read_metrics()) == 1, "the record no checkpoint covered was dropped, then written again"
    assert not list(run.checkpoints.glob(".*.tmp"))
    straight = load_checkpoint(RunFolder(tmp_path / "straight").checkpoint("last"))["model"]
    again = load_checkpoint(run.checkpoint("last"))["model"]
    assert all(torch.equal(straight[name], again[name]) for name in straight)


def test_a_failed_start_leaves_nothing_and_a_leftover_folder_counts_as_empty(tmp_path, tiny_config):
    with pytest.raises(DataError):
        train(tiny_config.override(dataset="cifar10"), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    leftover = tmp_path / "leftover"
    (leftover / "checkpoints").mkdir(parents=True)
    (leftover / "run.lock").write_text("12345")
    assert train(tiny_config.override(epochs=1), out=leftover)["epochs"] == 1
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not empty"):
        train(tiny_config, out=mine)
    assert _files(mine) == {mine / "notes.txt": b"mine"}


def test_resume_refuses_fewer_epochs_than_done_and_changes_nothing(tmp_path, tiny_config):
    train(tiny_config.override(epochs=2), out=tmp_path / "run")
    before = _files(tmp_path / "run")
    with pytest.raises(RunFolderError, match="has done 2 epochs; optim.epochs must be at least 2"):
        resume(tmp_path / "run", epochs=1)
    assert _files(tmp_path / "run") == before


def test_a_damaged_metrics_line_before_valid_ones_is_refused_naming_the_line(tmp_path, tiny_config):
    train(tiny_config.override(epochs=2), out=tmp_path / "run")
    folder = RunFolder(tmp_path / "run")
    lines = folder.metrics.read_text().splitlines()
    folder.metrics.write_text("\n".join(["{not json", lines[1]]) + "\n")
    with pytest.raises(RunFolderError, match=r"metrics.jsonl: line 1 is damaged"):
        resume(folder.path, epochs=3)
    folder.metrics.write_text("\n".join([*lines, '{"torn']))
    assert len(folder.read_metrics()) == 2, "a torn last line is a crash mid-write and is left out"


def test_sigterm_during_the_last_evaluation_exits_143_and_resumes(tmp_path, tiny_config, monkeypatch):
    from stochdepth.train import trainer

    real = trainer.error_counts
    calls = {"count": 0}

    def error_counts_with_sigterm(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 2 * 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "error_counts", error_counts_with_sigterm)
    with pytest.raises(trainer.TrainingStopped) as stopped:
        train(tiny_config.override(epochs=2), out=tmp_path / "run")
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    folder = RunFolder(tmp_path / "run")
    assert not folder.summary.exists()
    monkeypatch.setattr(trainer, "error_counts", real)
    assert resume(folder.path)["epochs"] == 2 and folder.summary.is_file()


def test_sigterm_while_recalibrating_batchnorm_keeps_the_training_statistics_and_resumes_exactly(
    tmp_path, tiny_config, monkeypatch
):
    from stochdepth.train import trainer

    config = tiny_config.override(final_survival_prob=0.2, recalibrate_batchnorm=96, eval_every_iters=5)
    train(config, out=tmp_path / "straight")
    real = trainer.Trainer._recalibration_images
    calls = {"count": 0}

    def signalled_in_the_second(self, loader):
        calls["count"] += 1
        for index, images in enumerate(real(self, loader)):
            if calls["count"] == 2 and index == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            yield images

    monkeypatch.setattr(trainer.Trainer, "_recalibration_images", signalled_in_the_second)
    with pytest.raises(trainer.TrainingStopped):
        train(config, out=tmp_path / "stopped")
    monkeypatch.setattr(trainer.Trainer, "_recalibration_images", real)
    state = torch.load(RunFolder(tmp_path / "stopped").checkpoint("last"), weights_only=True)
    assert (state["iteration"], state["evaluation_owed"]) == (10, True)
    resume(tmp_path / "stopped")
    straight, stopped = (
        torch.load(RunFolder(tmp_path / run).checkpoint("last"), weights_only=True)["model"]
        for run in ("straight", "stopped")
    )
    assert all(torch.equal(value, stopped[name]) for name, value in straight.items()), "statistics as trained"
    timing = {"epoch_seconds", "images_per_second"}
    records = [
        [
            {key: value for key, value in record.items() if key not in timing}
            for record in RunFolder(path).read_metrics()
        ]
        for path in (tmp_path / "straight", tmp_path / "stopped")
    ]
    assert records[0] == records[1] and len(records[0]) == 5


@pytest.mark.parametrize(
    ("test_every_eval", "signalled_call"),
    [(False, 3), (False, 2), (True, 1)],
    ids=["final-test-evaluation", "validation", "validation-before-test"],
)
def test_a_signal_during_an_evaluation_stops_it_within_a_batch_and_the_resume_does_it_first(
    tmp_path, tiny_config, monkeypatch, test_every_eval, signalled_call
):
    """A SIGTERM inside an evaluation (a preemption's grace period is short) stops it after one batch; the
    checkpoint owes that evaluation, and the resumed run ends with the records of an uninterrupted one."""
    from stochdepth.train import trainer

    config = tiny_config.override(epochs=2, eval_size=96, batch_size=32, test_every_eval=test_every_eval)
    train(config, out=tmp_path / "straight")
    real = trainer.error_counts
    calls = {"count": 0, "batches": 0}

    def counting_batches(progress):
        real_tick = progress.tick

        def tick():
            calls["batches"] += 1
            real_tick()

        progress.tick = tick
        return progress

    def error_counts_with_sigterm(model, loader, autocast, channels_last, progress=None, should_stop=None):
        calls["count"] += 1
        if calls["count"] == signalled_call:
            calls["batches"] = 0
            os.kill(os.getpid(), signal.SIGTERM)
            progress = counting_batches(progress)
        return real(model, loader, autocast, channels_last, progress, should_stop)

    monkeypatch.setattr(trainer, "error_counts", error_counts_with_sigterm)
    with pytest.raises(trainer.TrainingStopped) as stopped:
        train(config, out=tmp_path / "run")
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert calls["batches"] == 1, "the evaluation stopped after the batch the signal arrived in"
    folder = RunFolder(tmp_path / "run")
    assert not folder.summary.exists()
    monkeypatch.setattr(trainer, "error_counts", real)
    summary = resume(folder.path)
    straight = RunFolder(tmp_path / "straight")
    timeless = {"epoch_seconds", "images_per_second"}
    assert [{k: v for k, v in r.items() if k not in timeless} for r in folder.read_metrics()] == [
        {k: v for k, v in r.items() if k not in timeless} for r in straight.read_metrics()
    ]
    expected = json.loads(straight.summary.read_text())
    assert {k: v for k, v in summary.items() if k != "train_seconds"} == {
        k: v for k, v in expected.items() if k != "train_seconds"
    }


def test_two_sweeps_started_together_share_the_folder_without_clobbering(tmp_path, synthetic_data_dir):
    flags = [
        *("sweep", "--model", "resnet8", "--dataset", "fashion-mnist", "--data-dir", str(synthetic_data_dir)),
        *("--train-size", "128", "--eval-size", "32", "--batch-size", "32", "--epochs", "2", "--device", "cpu"),
        *("--survival-rule", "none", "linear", "--seed", "1", "2", "--out", str(tmp_path / "sweep")),
    ]
    processes = [
        subprocess.Popen([sys.executable, "-m", "stochdepth", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    runs = sorted((tmp_path / "sweep" / "runs").iterdir())
    assert len(runs) == 4
    for run in runs:
        records = RunFolder(run).read_metrics()
        assert [record["epoch"] for record in records] == [1.0, 2.0], run.name
        assert json.loads(RunFolder(run).summary.read_text())["epochs"] == 2


def test_a_flipped_bit_in_a_checkpoint_is_refused_naming_the_file(tmp_path, tiny_config, capsys):
    train(tiny_config.override(epochs=1), out=tmp_path / "run")
    path = RunFolder(tmp_path / "run").checkpoint("best")
    state = torch.load(path, weights_only=True)
    weight = state["model"]["blocks.0.branch.0.weight"]
    weight.view(torch.int32)[0, 0, 0, 0] ^= 1 << 20
    torch.save(state, path)
    assert main(["eval", str(tmp_path / "run"), "--data-dir", tiny_config.data.data_dir]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{path}: content does not match its checksum" in error
    momentum = RunFolder(tmp_path / "run").checkpoint("last")
    state = torch.load(momentum, weights_only=True)
    buffers = [value for value in state["optimizer"]["state"].values() if "momentum_buffer" in value]
    buffers[0]["momentum_buffer"].view(-1)[0] += 1
    torch.save(state, momentum)
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        resume(tmp_path / "run", epochs=2)


def test_writes_never_follow_symbolic_links(tmp_path, tiny_config):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").symlink_to(victim)
    with pytest.raises(RunFolderError, match="cannot lock"):
        train(tiny_config.override(epochs=1), out=run)
    assert victim.read_text() == "precious"
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.symlink_to(victim)
    save_checkpoint({"model": {}}, checkpoint)
    assert victim.read_text() == "precious"
    assert not checkpoint.is_symlink() and load_checkpoint(checkpoint)["model"] == {}


def test_a_lock_that_is_a_folder_is_one_clear_error(tmp_path, tiny_config):
    (tmp_path / "run" / "run.lock").mkdir(parents=True)
    with pytest.raises(RunFolderError, match="cannot lock"):
        train(tiny_config.override(epochs=1), out=tmp_path / "run")


def test_a_full_disk_inside_torch_save_is_a_checkpoint_error_decided_by_free_space(tmp_path, monkeypatch):
    """torch.save's zip writer says only "unexpected pos"; the free space decides, not the words."""
    import collections

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr("stochdepth.train.checkpoint.torch.save", full)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr("stochdepth.files.shutil.disk_usage", lambda path: usage(1 << 30, 1 << 30, 0))
    with pytest.raises(CheckpointError, match="cannot write .*: no space left on device; no earlier checkpoint exists"):
        save_checkpoint({"model": {}}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr("stochdepth.files.shutil.disk_usage", lambda path: usage(1 << 30, 0, 1 << 30))
    with pytest.raises(RuntimeError, match="unexpected pos"):
        save_checkpoint({"model": {}}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == [], "not a full disk: the error is not hidden, and nothing is left"


def test_an_os_error_while_writing_is_one_line_and_leaves_the_old_file(tmp_path, monkeypatch):
    from stochdepth.files import WriteFailed, write_text_atomically

    target = tmp_path / "summary.json"
    target.write_text("old")

    def failing_fsync(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("stochdepth.files.os.fsync", failing_fsync)
    with pytest.raises(WriteFailed, match=r"cannot write .*summary.json: No space left on device"):
        write_text_atomically(target, "new")
    assert target.read_text() == "old" and sorted(path.name for path in tmp_path.iterdir()) == ["summary.json"]


def test_auto_resume_starts_an_empty_folder_and_continues_a_run_in_it(tmp_path, tiny_config, capsys):
    run = tmp_path / "run"
    assert train(tiny_config.override(epochs=1), out=run, resume_existing=True)["epochs"] == 1
    first = RunFolder(run).read_metrics()
    assert "resuming" not in capsys.readouterr().out
    assert train(tiny_config.override(epochs=2), out=run, resume_existing=True)["epochs"] == 2
    assert f"resuming {run / 'checkpoints' / 'last.pt'} at epoch 2 of 2, iteration 8" in capsys.readouterr().out
    records = RunFolder(run).read_metrics()
    assert records[:1] == first and [record["epoch"] for record in records] == [1.0, 2.0]
    assert train(tiny_config.override(epochs=2), out=run, resume_existing=True)["epochs"] == 2
    printed = capsys.readouterr().out
    assert "trained all its 2 epochs; nothing left to train" in printed and "resuming" not in printed
    assert RunFolder(run).read_metrics() == records
    with pytest.raises(RunFolderError, match="not empty"):
        train(tiny_config.override(epochs=3), out=run)


def test_auto_resume_refuses_options_that_contradict_the_run(tmp_path, tiny_config):
    run = tmp_path / "run"
    train(tiny_config.override(epochs=1), out=run)
    (run / "run.lock").write_text("4242")  # the last holder's process id, not this process's
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    with pytest.raises(RunFolderError, match=r"other options: model.model \('resnet8' in the run, 'resnet20' given\)"):
        train(tiny_config.override(epochs=2, model="resnet20", lr=0.05), out=run, resume_existing=True)
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before
    assert train(tiny_config.override(epochs=2), out=run, resume_existing=True)["epochs"] == 2


@pytest.mark.parametrize("damage", ["last missing, best kept", "last is a fifo", "checkpoints is a file"])
def test_resume_without_a_usable_last_checkpoint_is_refused_and_changes_nothing(tmp_path, tiny_config, damage):
    run = tmp_path / "run"
    train(tiny_config.override(epochs=1), out=run)
    folder = RunFolder(run)
    if damage == "checkpoints is a file":
        shutil.rmtree(folder.checkpoints)
        folder.checkpoints.write_text("not a folder")
    else:
        folder.checkpoint("last").unlink()
        if damage == "last is a fifo":
            os.mkfifo(folder.checkpoint("last"))
    metrics = folder.metrics.read_text()
    message = {
        "last missing, best kept": r"has finished \(summary.json present\) but has no checkpoints/last.pt",
        "last is a fifo": "last.pt is not a regular file",
        "checkpoints is a file": "checkpoints is not a folder",
    }[damage]
    with pytest.raises(RunFolderError, match=message):
        resume(run, epochs=2)
    assert folder.metrics.read_text() == metrics, "nothing was changed"


def test_a_fifo_run_lock_neither_hangs_the_report_nor_a_resume(tmp_path, tiny_config, capsys):
    run = tmp_path / "runs" / "run"
    train(tiny_config.override(epochs=1), out=run)
    (run / "run.lock").unlink()
    os.mkfifo(run / "run.lock")
    assert not RunFolder(run).is_locked()
    with pytest.raises(RunFolderError, match="cannot lock .*run.lock: not a regular file"):
        resume(run, epochs=2)
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").is_file()


def test_a_failed_lock_write_is_one_line(tmp_path, monkeypatch):
    import errno

    def full(descriptor, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("stochdepth.train.run_folder.os.pwrite", full)
    with (
        pytest.raises(RunFolderError, match="cannot write .*run.lock: No space left on device"),
        RunFolder(tmp_path / "run").claim(),
    ):
        pass
    assert not (tmp_path / "run").exists()
