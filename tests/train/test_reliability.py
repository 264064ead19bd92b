"""Long runs survive faults and bad input: kills, signals, non-finite steps, full disks, bad files."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stochdepth.cli import main
from stochdepth.train import resume, train
from stochdepth.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stochdepth.train.run_folder import RunFolder, RunFolderError
from stochdepth.train.signals import TrainingStopped

FIXTURES = Path(__file__).parent.parent / "fixtures"
TIMING_KEYS = {"epoch_seconds", "images_per_second"}


def _flags(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        "resnet8",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(data_dir),
        "--train-size",
        "512",
        "--eval-size",
        "64",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--device",
        "cpu",
        "--seed",
        "2",
        "--out",
        str(out),
        *extra,
    ]


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stochdepth", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_metrics(folder: Path, lines: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = folder / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= lines:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("training did not reach the expected evaluation in time")


def _same_run(first: Path, second: Path) -> None:
    weights = [torch.load(RunFolder(path).checkpoint("last"), weights_only=True)["model"] for path in (first, second)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    records = [
        [{k: v for k, v in record.items() if k not in TIMING_KEYS} for record in RunFolder(path).read_metrics()]
        for path in (first, second)
    ]
    assert records[0] == records[1]
    assert [record["epoch"] for record in records[1]] == [1.0, 2.0, 3.0]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, synthetic_data_dir) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(_flags(synthetic_data_dir, out)) == 0
    return out


STEPS_PER_EPOCH = 512 // 32


def _wait_for_mid_epoch_checkpoint(folder: RunFolder, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``last.pt`` (written every step here) holds a position well inside epoch 2."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            state = load_checkpoint(folder.checkpoint("last"))
        except CheckpointError:
            continue
        if state["epoch"] == 1 and 2 <= state["random_states"]["data_position"] <= STEPS_PER_EPOCH // 2:
            return
        time.sleep(0.01)
    raise AssertionError("training did not reach the middle of epoch 2 in time")


def test_sigkill_mid_epoch_then_resume_ends_like_an_uninterrupted_run(tmp_path, synthetic_data_dir, reference_run):
    out = tmp_path / "killed"
    process = _start(_flags(synthetic_data_dir, out, "--checkpoint-every-minutes", "0"))
    _wait_for_mid_epoch_checkpoint(RunFolder(out), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    state = load_checkpoint(RunFolder(out).checkpoint("last"))
    assert state["epoch"] == 1 and 0 < state["random_states"]["data_position"] < STEPS_PER_EPOCH, "killed mid-epoch"
    assert main(["train", "--resume", str(out)]) == 0
    _same_run(reference_run, out)


def test_sigterm_writes_a_resumable_checkpoint_and_says_how_to_resume(tmp_path, synthetic_data_dir, reference_run):
    out = tmp_path / "terminated"
    process = _start(_flags(synthetic_data_dir, out))
    _wait_for_metrics(out, 1, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in stderr and f"stochdepth train --resume {out}" in stderr
    state = load_checkpoint(RunFolder(out).checkpoint("last"))
    assert 12 <= state["iteration"] < 36
    assert main(["train", "--resume", str(out)]) == 0
    _same_run(reference_run, out)


def _nan_at(monkeypatch, call_number: int) -> None:
    real = torch.nn.functional.cross_entropy
    calls = {"count": 0}

    def cross_entropy(*args, **kwargs):
        calls["count"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["count"] == call_number else loss

    monkeypatch.setattr("stochdepth.train.trainer.F.cross_entropy", cross_entropy)


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_config, monkeypatch):
    _nan_at(monkeypatch, 8 + 3)
    with pytest.raises(TrainingStopped, match="non-finite loss or gradient at iteration 11") as stop:
        train(tiny_config, out=tmp_path / "run")
    assert stop.value.exit_code == 3
    state = load_checkpoint(RunFolder(tmp_path / "run").checkpoint("last"))
    assert state["iteration"] == 8
    assert all(torch.isfinite(tensor).all() for tensor in state["model"].values() if tensor.is_floating_point())


def test_skip_mode_skips_the_bad_step_and_carries_on(tmp_path, tiny_config, monkeypatch):
    _nan_at(monkeypatch, 5)
    summary = train(tiny_config.override(on_nonfinite="skip"), out=tmp_path / "run")
    records = RunFolder(tmp_path / "run").read_metrics()
    assert [record["skipped_steps"] for record in records] == [1, 1, 1]
    assert summary["iterations"] == 24
    state = load_checkpoint(RunFolder(tmp_path / "run").checkpoint("last"))
    assert all(torch.isfinite(tensor).all() for tensor in state["model"].values() if tensor.is_floating_point())


def test_a_full_disk_leaves_the_previous_checkpoint_intact(tmp_path, tiny_config, monkeypatch):
    real_save = torch.save
    saves = {"count": 0}

    def save(obj, file, *args, **kwargs):
        saves["count"] += ".last.pt." in file.name
        if saves["count"] >= 2:
            file.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr("stochdepth.train.checkpoint.torch.save", save)
    with pytest.raises(CheckpointError, match="No space left on device; the previous checkpoint is intact"):
        train(tiny_config, out=tmp_path / "run")
    folder = RunFolder(tmp_path / "run")
    assert load_checkpoint(folder.checkpoint("last"))["iteration"] == 8
    assert sorted(path.name for path in folder.checkpoints.iterdir()) == ["best.pt", "last.pt"]


@pytest.mark.parametrize("fault", ["killed", "disk full"])
def test_a_run_stopped_between_its_first_best_and_last_checkpoint_resumes_from_best(tmp_path, tiny_config, fault):
    """The moment between the first ``best.pt`` and ``last.pt``: ``best.pt`` holds the whole training state."""
    config = tiny_config.override(epochs=2)
    train(config, out=tmp_path / "straight")
    real_save = torch.save

    def save(obj, file, *args, **kwargs):
        if ".last.pt." in file.name:
            if fault == "killed":
                raise KeyboardInterrupt  # stands for SIGKILL: nothing after this point runs
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, file, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("stochdepth.train.checkpoint.torch.save", save)
        with pytest.raises((KeyboardInterrupt, CheckpointError)):
            train(config, out=tmp_path / "run")
    folder = RunFolder(tmp_path / "run")
    assert sorted(path.name for path in folder.checkpoints.iterdir()) == ["best.pt"]
    summary = resume(tmp_path / "run")
    straight = load_checkpoint(RunFolder(tmp_path / "straight").checkpoint("last"))["model"]
    resumed = load_checkpoint(folder.checkpoint("last"))["model"]
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    assert summary["iterations"] == 16


def test_an_unwritable_out_is_one_clear_line(tmp_path, synthetic_data_dir, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert main(_flags(synthetic_data_dir, tmp_path / "file" / "run")) == 2
    error = capsys.readouterr().err
    assert error.startswith("stochdepth: error: cannot create run folder") and error.count("\n") == 1


def test_a_second_process_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path, tiny_config):
    train(tiny_config.override(epochs=1), out=tmp_path / "run")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from stochdepth.train.run_folder import RunFolder\n"
            "with RunFolder(sys.argv[1]).claim():\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path / "run"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunFolderError, match=f"in use by process {holder.pid}"):
        resume(tmp_path / "run", epochs=2)
    assert RunFolder(tmp_path / "run").is_locked()
    holder.kill()
    holder.wait()
    assert not RunFolder(tmp_path / "run").is_locked()
    assert resume(tmp_path / "run", epochs=2)["epochs"] == 2


@pytest.mark.parametrize(
    "edit",
    [
        lambda values: "{ not json",
        lambda values: json.dumps({**values, "optim": {**values["optim"], "epochs": "many"}}),
        lambda values: json.dumps({**values, "model": {**values["model"], "model": "resnet9"}}),
        lambda values: json.dumps({**values, "run": {**values["run"], "speed": "fast"}}),
        lambda values: json.dumps({**values, "model": {**values["model"], "final_survival_prob": 2}}),
    ],
    ids=["not-json", "epochs-text", "unknown-model", "unknown-key", "bad-probability"],
)
def test_a_config_json_edited_into_nonsense_is_one_line_naming_it(tmp_path, edit, capsys):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "format1_run", run)
    folder = RunFolder(run)
    folder.config.write_text(edit(json.loads(folder.config.read_text())))
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    assert main(["train", "--resume", str(run)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"stochdepth: error: {folder.config}: not a valid run configuration")
    assert error.count("\n") == 1
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before


def test_a_checkpoint_of_format_1_still_loads_and_resumes(tmp_path, synthetic_data_dir, monkeypatch, capsys):
    """The fixture was written by checkpoint format 1 (a one-epoch resnet8 run on the synthetic data)."""
    monkeypatch.setenv("STOCHDEPTH_DATA", str(synthetic_data_dir))
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "format1_run", run)
    assert load_checkpoint(RunFolder(run).checkpoint("last"))["format_version"] == 1
    assert "data_spec" not in json.loads(RunFolder(run).config.read_text())
    assert main(["eval", str(run), "--checkpoint", "last"]) == 2
    assert "written by an older stochdepth" in capsys.readouterr().err
    summary = resume(run, epochs=2)
    assert summary["epochs"] == 2
    assert [record["epoch"] for record in RunFolder(run).read_metrics()] == [1.0, 2.0]
    state = load_checkpoint(RunFolder(run).checkpoint("last"))
    assert state["format_version"] == 2 and state["data_spec"]["num_classes"] == 10
    assert json.loads(RunFolder(run).config.read_text())["data_spec"] == state["data_spec"]


def test_an_unknown_checkpoint_format_is_a_clear_error(tmp_path):
    save_checkpoint({"model": {}}, tmp_path / "new.pt")
    state = torch.load(tmp_path / "new.pt", weights_only=True)
    state["format_version"] = 99
    torch.save(state, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="format 99 is not known .* upgrade stochdepth"):
        load_checkpoint(tmp_path / "new.pt")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_payload_in_a_checkpoint_is_refused_unexecuted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format_version": 1, "model": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("keep", [0, 100, 5000])
def test_truncated_checkpoints_are_refused(tmp_path, keep):
    save_checkpoint({"model": {"weight": torch.randn(100, 100)}}, tmp_path / "last.pt")
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match="last.pt"):
        load_checkpoint(tmp_path / "last.pt")


def test_sigterm_while_the_data_loads_stops_with_its_message_and_leaves_no_folder(
    tmp_path, synthetic_data_dir, monkeypatch, capsys
):
    import stochdepth.train.trainer as trainer_module

    real = trainer_module.build_loaders

    def terminated_while_loading(*args, **kwargs):
        loaders = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return loaders

    monkeypatch.setattr(trainer_module, "build_loaders", terminated_while_loading)
    out = tmp_path / "a" / "run"
    assert main(_flags(synthetic_data_dir, out)) == 128 + signal.SIGTERM
    assert "stopped by SIGTERM before training started" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [], "the run folder (and a/) removed, lock and checkpoints/ with it"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("model", "scaling", "inverted"),
        ("model", "survival_rule", "uniform"),
        ("model", "final_survival_prob", 0.7),
        ("model", "drop_mode", "sample"),
        ("model", "time_schedule", "late"),
        ("optim", "lr", 0.3),
        ("run", "seed", 5),
        ("data", "train_size", 64),
    ],
)
def test_a_config_json_edited_after_the_checkpoint_is_refused_naming_the_field(
    tmp_path, tiny_config, section, key, value
):
    run = tmp_path / "run"
    train(tiny_config.override(epochs=1), out=run)
    folder = RunFolder(run)
    values = json.loads(folder.config.read_text())
    values[section][key] = value
    folder.config.write_text(json.dumps(values))
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    with pytest.raises(RunFolderError, match=f"disagree on {section}.{key} "):
        resume(run, epochs=2)
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before, "nothing was changed"


@pytest.mark.parametrize(
    ("key", "value"),
    [("momentum", 50.0), ("maximize", True), ("dampening", 0.9), ("nesterov", "yes"), ("weight_decay", -1.0)],
)
def test_a_checkpoint_whose_optimizer_settings_differ_from_the_run_is_refused(tmp_path, tiny_config, key, value):
    from stochdepth.train.checkpoint import content_digest

    run = tmp_path / "run"
    train(tiny_config.override(epochs=1), out=run)
    last = RunFolder(run).checkpoint("last")
    content = {name: part for name, part in torch.load(last, weights_only=True).items() if name != "checksum"}
    for group in content["optimizer"]["param_groups"]:
        group[key] = value
    torch.save({**content, "checksum": content_digest(content)}, last)  # a valid digest: the edit is in the content
    with pytest.raises(CheckpointError, match=f"its optimizer has {key} "):
        resume(run, epochs=2)
