"""Bad input from a user or from a run folder received from elsewhere: one line, exit 2, nothing written.

The property-based test feeds ``eval``, ``export``, ``report`` and ``--resume`` run folders whose
files hold random wrong types, values and truncations, in-process, and checks the promise: exit
status 2, one line on stderr naming the file, no traceback, and no file outside ``--out`` created
or changed.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stochdepth.cli import main
from stochdepth.train.checkpoint import content_digest
from stochdepth.train.run_folder import RunFolder
from tests.helpers import one_line_error


def _flags(data_dir: Path, out: Path) -> list[str]:
    return [
        *("train", "--model", "resnet8", "--dataset", "fashion-mnist", "--data-dir", str(data_dir)),
        *("--train-size", "64", "--eval-size", "32", "--batch-size", "32", "--epochs", "1", "--device", "cpu"),
        *("--out", str(out)),
    ]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_data_dir) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(_flags(synthetic_data_dir, out)) == 0
    return out


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}


BAD_OPTIONS = [
    (["train", "--lr", "1e300"], "lr"),
    (["train", "--lr", "nan"], "lr"),
    (["train", "--lr-milestones", "2"], "lr_milestones"),
    (["train", "--lr-milestones", "-1"], "lr_milestones"),
    (["train", "--lr-decay", "-1"], "lr_decay"),
    (["train", "--lr-decay", "nan"], "lr_decay"),
    (["train", "--warmup-lr", "-1"], "warmup_lr"),
    (["train", "--weight-decay", "inf"], "weight_decay"),
    (["train", "--checkpoint-every-minutes", "nan"], "checkpoint_every_minutes"),
    (["train", "--device", "meta"], "meta"),
    (["train", "--data-dir", "/etc/passwd"], "/etc/passwd"),
    (["train", "--epochs", "many"], "invalid int value"),
    (["train", "--epochs", "0"], "epochs must be an integer in [1, 1000000]"),
    (["train", "--no-such-option"], "unrecognized arguments"),
    (["train", "--resume", "somewhere", "--auto-resume"], "not both"),
    (["train", "--init-weights", "/nonexistent/weights.safetensors"], "--init-weights /nonexistent"),
    (["train", "--init-weights", "/dev/zero"], "/dev/zero: not a regular file"),
    (["train", "--init-weights", "/etc"], "/etc: not a regular file"),
    (["train", "--sync-batchnorm", "--device", "cpu"], "--sync-batchnorm"),
    (["train", "--sync-batchnorm", "--drop-mode", "sample"], "--sync-batchnorm works with --drop-mode batch"),
    (["train", "--final-survival-prob", "1.5"], "(0, 1]"),
    (["train", "--final-survival-prob", "0"], "(0, 1]"),
    (["train", "--model", "resnet7"], "known models"),
    (["train", "--model", "torchvision/../x"], "plain architecture name"),
    (["train", "--dataset", "mnist"], "unknown dataset"),
    (["train", "--survival-rule", "cosine"], "linear, uniform, exponential, none"),
    (["train", "--drop-mode", "row"], "batch, sample"),
    (["train", "--scaling", "half"], "paper, inverted"),
    (["train", "--precision", "fp8"], "fp32, bf16"),
    (["train", "--time-schedule", "cosine"], "constant, ramp, late, early"),
    (["train", "--model", "torchvision/densenet121", "--survival-rule", "none"], "does not run on 28x28 images"),
    (["train", "--time-schedule", "late", "--time-schedule-fraction", "1.5"], "time_schedule_fraction"),
    (["train", "--time-schedule-fraction", "-0.1"], "time_schedule_fraction"),
    (["train", "--time-schedule-fraction", "nan"], "time_schedule_fraction"),
    (["train", "--recalibrate-batchnorm", "0"], "recalibrate_batchnorm must be an integer in [1,"),
    (["train", "--recalibrate-batchnorm", "all"], "invalid int value"),
    (["train", "--preset", "cifar11-resnet110"], "known presets"),
    (["eval", "nowhere", "--device", "meta"], "nowhere"),
    (["eval", "nowhere", "--recalibrate-batchnorm", "0"], "recalibrate_batchnorm must be an integer in [1,"),
    (["sweep", "--model", "resnet8"], "--out"),
    (["report"], "the following arguments are required"),
]
"""Every bad option with a word its one-line error must contain (the command line's one table of them)."""


@pytest.mark.parametrize(("argv", "message"), BAD_OPTIONS)
def test_bad_options_are_one_line_and_exit_2(tmp_path, argv, message, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = ["--out", str(tmp_path / "run"), "--model", "resnet8"] if argv[0] == "train" else []
    command = [argv[0], *extra, *argv[1:]]  # the option under test comes last, so it wins
    if any(word in message for word in ("unrecognized", "invalid int", "required")):
        with pytest.raises(SystemExit) as exit_:
            main(command)
        assert exit_.value.code == 2
    else:
        assert main(command) == 2
    assert message in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_to_clobber_or_write_into_the_run(finished_run, tmp_path, capsys):
    before = _snapshot(finished_run)
    for target in (
        finished_run / "checkpoints" / "best.pt",
        finished_run / "config.json",
        finished_run / "checkpoints" / "model.pt2",
    ):
        assert main(["export", str(finished_run), "--format", "exported", "--out", str(target), "--force"]) == 2
        one_line_error(capsys)
    existing = tmp_path / "model.pt2"
    existing.write_text("mine")
    assert main(["export", str(finished_run), "--format", "exported", "--out", str(existing)]) == 2
    assert "--force" in one_line_error(capsys)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "link.pt2").symlink_to(victim)
    assert main(["export", str(finished_run), "--format", "torchscript", "--out", str(tmp_path / "link.pt2")]) == 2
    one_line_error(capsys)
    assert victim.read_text() == "precious" and existing.read_text() == "mine"
    assert main(["export", str(finished_run), "--format", "exported", "--out", str(existing), "--force"]) == 0
    assert existing.stat().st_size > 1000
    assert _snapshot(finished_run) == before


def test_export_without_the_onnx_extra_says_which_extra(finished_run, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    assert main(["export", str(finished_run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "stochdepth[onnx]" in one_line_error(capsys)


def test_eval_of_a_foreign_run_never_downloads_or_creates(finished_run, tmp_path, capsys, monkeypatch):
    foreign = tmp_path / "foreign"
    shutil.copytree(finished_run, foreign)
    config = json.loads((foreign / "config.json").read_text())
    config["data"].update(download=True, data_dir=str(tmp_path / "made-by-the-folder"))
    (foreign / "config.json").write_text(json.dumps(config))
    state = torch.load(foreign / "checkpoints" / "best.pt", weights_only=True)
    state["config"]["data"].update(download=True, data_dir=str(tmp_path / "made-by-the-checkpoint"))
    content = {key: value for key, value in state.items() if key != "checksum"}
    torch.save({**content, "checksum": content_digest(content)}, foreign / "checkpoints" / "best.pt")
    monkeypatch.setattr("stochdepth.data.small_images.download_url", pytest.fail)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STOCHDEPTH_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr("stochdepth.data.small_images.SYSTEM_DATA", tmp_path / "no-system-data")
    assert main(["eval", str(foreign)]) == 2
    assert "Fashion-MNIST not found" in one_line_error(capsys)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["foreign"]


@pytest.mark.parametrize("ranks", ["bogus", 7, [{"cuda": "no torch state"}], [None, None]])
def test_a_checkpoint_with_malformed_per_rank_random_states_is_one_line_and_left_alone(
    finished_run, tmp_path, ranks, capsys
):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    state["random_states"]["ranks"] = ranks
    content = {key: value for key, value in state.items() if key != "checksum"}
    torch.save({**content, "checksum": content_digest(content)}, run / "checkpoints" / "last.pt")
    before = _snapshot(run)
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    assert "does not fit this run" in one_line_error(capsys)
    assert _snapshot(run) == before


RUN_FILES = ("config.json", "metrics.jsonl", "summary.json")
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


CHECKPOINT_VALUES = [
    ("model",),
    ("config",),
    ("data_spec",),
    ("model_name",),
    ("optimizer",),
    ("epoch",),
    ("iteration",),
    ("evaluations",),
    ("skipped_steps",),
    ("train_seconds",),
    ("best",),
    ("best", "val_error"),
    ("best", "test_error"),
    ("best", "epoch"),
    ("final",),
    ("window", "images"),
    ("window", "steps"),
    ("window", "seconds"),
    ("window", "lr"),
    ("window", "branches_run"),
    ("random_states", "data_position"),
]
"""Values a checkpoint holds that a resume reads: damaged, then given a valid digest."""


def _damage(values: object, path: list, junk: object) -> object:
    """``values`` with the item at ``path`` (keys into nested dicts) replaced by ``junk``."""
    if not path or not isinstance(values, dict):
        return junk
    key = path[0]
    return {**values, key: _damage(values.get(key), path[1:], junk)}


def _paths(values: object, prefix: tuple = ()) -> list[tuple]:
    if not isinstance(values, dict):
        return [prefix]
    return [prefix] + [path for key, value in values.items() for path in _paths(value, (*prefix, key))]


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_run_folders_are_one_line_naming_the_file(finished_run, tmp_path_factory, data, capsys):
    work = tmp_path_factory.mktemp("damaged")
    run = work / "run"
    shutil.copytree(finished_run, run)
    which = data.draw(st.sampled_from([*RUN_FILES, "checkpoint", "truncate"]), label="which")
    if which == "truncate":
        target = data.draw(st.sampled_from([*RUN_FILES, "checkpoints/best.pt", "checkpoints/last.pt"]))
        raw = (run / target).read_bytes()
        (run / target).write_bytes(raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))])
        named = target
    elif which == "checkpoint":
        state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
        where = data.draw(st.sampled_from(CHECKPOINT_VALUES), label="checkpoint value")
        state = _damage(state, list(where), data.draw(JUNK, label="junk"))
        content = {name: value for name, value in state.items() if name != "checksum"}
        for name in ("best.pt", "last.pt"):
            torch.save({**content, "checksum": content_digest(content)}, run / "checkpoints" / name)
        named = "checkpoints/"
    else:
        path = run / which
        text = path.read_text()
        values = json.loads(text.splitlines()[0] if which == "metrics.jsonl" else text)
        where = list(data.draw(st.sampled_from(_paths(values)), label="where"))
        path.write_text(json.dumps(_damage(values, where, data.draw(JUNK, label="junk"))) + "\n")
        named = which
    out = work / "out"
    command = data.draw(st.sampled_from(["eval", "export", "report", "resume"]), label="command")
    argv = {
        "eval": ["eval", str(run)],
        "export": ["export", str(run), "--format", "safetensors", "--out", str(out / "model.safetensors")],
        "report": ["report", str(run), "--out", str(out)],
        "resume": ["train", "--resume", str(run), "--epochs", "2"],
    }[command]
    out.mkdir()
    before = _snapshot(run)
    capsys.readouterr()
    status = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if status != 0:
        assert status == 2, captured.err
        assert captured.err.count("\n") == 1 and captured.err.startswith("stochdepth: error: "), captured.err
        data_moved = "not found" in captured.err or "data dir" in captured.err  # the config names other data
        if command != "report" and not data_moved:
            assert named.split("/")[0] in captured.err or str(run) in captured.err, captured.err
    if command != "resume" or status != 0:
        assert _snapshot(run) == before, "a command that reads a run changed it"
    assert {path.parent for path in work.rglob("*") if path.is_file() and not path.is_relative_to(run)} <= {out}
    assert not RunFolder(run).is_locked()


def test_sweep_and_report_out_that_cannot_be_written_are_one_line(finished_run, tmp_path, capsys, synthetic_data_dir):
    (tmp_path / "file").write_text("not a folder")
    sweep = ["sweep", "--model", "resnet8", "--dataset", "fashion-mnist", "--data-dir", str(synthetic_data_dir)]
    assert main([*sweep, "--out", str(tmp_path / "file")]) == 2
    one_line_error(capsys)
    assert main(["report", str(finished_run), "--out", str(tmp_path / "file")]) == 2
    one_line_error(capsys)
    assert (tmp_path / "file").read_text() == "not a folder"


def test_report_never_writes_through_a_run_folders_lock_link(finished_run, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "run.lock").unlink(missing_ok=True)
    (run / "run.lock").symlink_to(victim)
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    assert victim.read_text() == "precious"


@pytest.mark.parametrize(
    "name",
    [
        "timm/local-dir:../../outside/evil",
        "timm/hf-hub:timm/resnet10t.c3_in1k",
        "timm/../resnet18",
        "torchvision/../../x",
        "timm/",
    ],
)
def test_model_names_that_are_paths_or_hub_references_never_reach_a_loader(name, tmp_path, capsys, monkeypatch):
    """A name from a run folder or the command line must not download, read elsewhere, or become a path."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("a model name reached the network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    out = tmp_path / "sweep"
    assert main(["sweep", "--model", name, "--epochs", "1", "--device", "cpu", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "plain architecture name" in error[0]
    assert not list(tmp_path.iterdir()), "nothing written"


@pytest.mark.parametrize(
    "name", ["torchvision/fasterrcnn_resnet50_fpn", "torchvision/deeplabv3_resnet50", "torchvision/quantized_resnet18"]
)
def test_only_classification_networks_are_built_from_a_name_and_nothing_downloads(name, tmp_path, capsys, monkeypatch):
    """Detection and segmentation builders fetch backbone weights by default: such names are refused first."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("a model name reached the network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", name, "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run")]) == 2
    assert "no classification model" in one_line_error(capsys)
    assert not list(tmp_path.iterdir()), "nothing written, no hub cache made"


def test_sweep_run_names_are_one_path_component_inside_the_sweep(tmp_path):
    from stochdepth.analysis.sweep import run_name
    from stochdepth.config import TrainConfig
    from stochdepth.train.setup import resolve_config

    config = resolve_config(TrainConfig().override(model="torchvision/resnet18", survival_rule="linear"))
    name = run_name(config)
    assert "/" not in name and not name.startswith(".")
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"RANK": "²", "WORLD_SIZE": "2"}, "RANK='²'"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "abc"}, "MASTER_PORT='abc'"),
    ],
)
def test_a_malformed_torchrun_environment_names_the_variable(monkeypatch, variables, named):
    from stochdepth.train.launch import torchrun_place

    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=named):
        torchrun_place()


def test_empty_out_and_preset_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "resnet8", "--out", ""]) == 2
    assert "--out must not be empty" in capsys.readouterr().err
    assert main(["train", "--preset", "", "--out", str(tmp_path / "run")]) == 2
    assert "preset" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_pickle_checkpoint_is_refused_in_one_line_without_torch_warnings(tmp_path, recwarn):
    from stochdepth.train.checkpoint import CheckpointError, load_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"format_version": 3, "thing": Path("x")}, path)
    with pytest.raises(CheckpointError, match="refused, not a checkpoint of plain tensors and numbers"):
        load_checkpoint(path)
    assert not [warning for warning in recwarn if "torch" in str(warning.filename)]


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("skipped_steps",), float("inf")),
        (("skipped_steps",), -1),
        (("random_states", "data_position"), float("inf")),
        (("random_states", "data_position"), 10**9),
        (("random_states", "data_position"), -3),
        (("best", "val_error"), "abc"),
        (("best",), {}),
        (("window", "images"), "many"),
        (("window", "steps"), -2),
        (("iteration",), 10**12),
        (("evaluations",), 10**12),
        (("train_seconds",), float("nan")),
    ],
)
def test_checkpoint_values_out_of_range_with_a_valid_digest_are_refused(finished_run, tmp_path, where, value, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    content = {key: item for key, item in _damage(state, list(where), value).items() if key != "checksum"}
    torch.save({**content, "checksum": content_digest(content)}, run / "checkpoints" / "last.pt")
    before = _snapshot(run)
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "last.pt: does not fit this run" in error, error
    assert _snapshot(run) == before


def test_links_inside_a_run_folder_are_never_written_through(finished_run, tmp_path, synthetic_data_dir, capsys):
    other, run = tmp_path / "other", tmp_path / "run"
    shutil.copytree(finished_run, other)
    shutil.copytree(finished_run, run)
    other_last = (other / "checkpoints" / "last.pt").read_bytes()
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").symlink_to(other / "checkpoints")
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    assert "checkpoints is not a folder" in one_line_error(capsys)
    assert (other / "checkpoints" / "last.pt").read_bytes() == other_last

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (other / "run.lock").unlink(missing_ok=True)
    os.link(victim, other / "run.lock")
    assert main(["train", "--resume", str(other), "--epochs", "3"]) == 2
    assert "has other hard links" in one_line_error(capsys)
    assert victim.read_text() == "precious"

    (other / "run.lock").unlink()
    os.link(other / "config.json", tmp_path / "config-link.json")
    config = (other / "config.json").read_bytes()
    for target in (other / "run.lock", tmp_path / "config-link.json"):
        argv = ["export", str(other), "--format", "safetensors", "--out", str(target), "--force"]
        assert main(argv) == 2
        assert "inside the run folder" in one_line_error(capsys) or target.name == "config-link.json"
    assert (other / "config.json").read_bytes() == config

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "runs").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    flags = ["sweep", "--model", "resnet8", "--dataset", "fashion-mnist", "--data-dir", str(synthetic_data_dir)]
    assert main([*flags, "--out", str(sweep)]) == 2
    assert "symbolic link" in one_line_error(capsys)
    assert not (tmp_path / "elsewhere").exists()


def test_a_failed_start_removes_every_folder_it_created_and_odd_names_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing_data = ["train", "--model", "resnet8", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none")]
    (tmp_path / "none").mkdir()
    assert main([*missing_data, "--out", str(tmp_path / "a" / "b" / "c" / "run")]) == 2
    assert "data_batch_1" in one_line_error(capsys)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["none"], "a/b/c/run all removed"
    assert main([*missing_data, "--out", "x" * 300]) == 2
    assert "File name too long" in one_line_error(capsys)
    assert main(["reproduce", "fashion-mnist-resnet110", "--seeds", str(10**12), "--out", "r"]) == 2
    assert "--seeds must be between 1 and 1000" in one_line_error(capsys)


@pytest.mark.parametrize(("damage", "message"), [("nan", "non-finite values"), ("variance", "negative variances")])
def test_eval_export_and_resume_refuse_a_checkpoint_with_unsound_weights(
    finished_run, tmp_path, capsys, damage, message
):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        content = {key: part for key, part in torch.load(path, weights_only=True).items() if key != "checksum"}
        weights = content["model"]
        if damage == "nan":
            key = next(key for key in weights if key.endswith("weight"))
            weights[key] = torch.full_like(weights[key], float("nan"))
        else:
            key = next(key for key in weights if key.endswith("running_var"))
            weights[key] = -weights[key] - 1
        torch.save({**content, "checksum": content_digest(content)}, path)
    before = _snapshot(run)
    assert main(["eval", str(run)]) == 2
    assert message in one_line_error(capsys)
    assert main(["export", str(run), "--format", "safetensors", "--out", str(tmp_path / "m.safetensors")]) == 2
    assert message in one_line_error(capsys)
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    assert message in one_line_error(capsys)
    assert _snapshot(run) == before and not (tmp_path / "m.safetensors").exists()


def test_text_in_kept_records_never_reaches_metrics_csv_and_the_report_says_why(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    folder = RunFolder(run)
    records = folder.read_metrics()
    records[0]["train_loss"] = "=cmd|' /C calc'!A0"
    folder.metrics.write_text("".join(json.dumps(record) + "\n" for record in records))
    before = _snapshot(run)
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    assert "metrics.jsonl: line 1 lacks numbers" in one_line_error(capsys)
    assert _snapshot(run) == before, "metrics.csv is not rewritten from the damaged records"
    assert "=cmd" not in folder.metrics_table.read_text()
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 2
    assert "line 1 lacks numbers" in one_line_error(capsys)


@pytest.mark.parametrize("content", [b"hello", b"\x80\x04K\x01.", b""])
def test_eval_of_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys, content):
    path = tmp_path / "h.pt"
    path.write_bytes(content)
    assert main(["eval", str(path)]) == 2
    error = one_line_error(capsys)
    assert "h.pt" in error and "checkpoint" in error and len(error) < 200, error


def test_init_weights_from_a_pickle_is_one_line_without_torch_warnings(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "evil.pt"
    torch.save({"x": Path("a")}, weights)
    argv = ["train", "--model", "resnet8", "--init-weights", str(weights), "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    error = one_line_error(capsys)
    assert "not readable as weights" in error and "Weights only load failed" not in error
