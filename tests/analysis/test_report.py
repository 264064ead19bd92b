"""Sweeps and the report, on run folders made by short real training runs."""

import json
import os
import shutil
import statistics
import struct
from pathlib import Path

import pytest
import torch

from stochdepth.analysis import plots
from stochdepth.analysis.report import write_report
from stochdepth.analysis.runs import find_runs
from stochdepth.analysis.sweep import run_sweep, sweep_grid
from stochdepth.cli import main
from stochdepth.train.run_folder import RunFolder

GRID = {"survival_rule": ["linear", "none"], "final_survival_prob": [0.3, 0.7], "seed": [1, 2]}
NAMES = {
    "resnet8-linear-p0.3-seed1",
    "resnet8-linear-p0.3-seed2",
    "resnet8-linear-p0.7-seed1",
    "resnet8-linear-p0.7-seed2",
    "resnet8-none-seed1",
    "resnet8-none-seed2",
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, synthetic_data_dir):
    from stochdepth.config import TrainConfig

    base = TrainConfig().override(
        model="resnet8",
        dataset="fashion-mnist",
        data_dir=str(synthetic_data_dir),
        train_size=128,
        eval_size=64,
        batch_size=32,
        epochs=2,
        device="cpu",
        record_gradients_every=2,
    )
    out = tmp_path_factory.mktemp("sweep")
    assert set(run_sweep(base, GRID, out).values()) == {"trained"}
    return base, out


def test_sweep_names_runs_readably_and_gives_constant_depth_once(sweep):
    base, out = sweep
    assert {point.name for point in sweep_grid(base, GRID)} == NAMES
    assert {path.name for path in (out / "runs").iterdir()} == NAMES


def test_p_l_of_one_is_the_constant_depth_run_trained_once(sweep):
    base, _ = sweep
    grid = {"survival_rule": ["none", "linear", "uniform"], "final_survival_prob": [0.5, 1.0], "seed": [1]}
    names = sorted(point.name for point in sweep_grid(base, grid))
    assert names == ["resnet8-linear-p0.5-seed1", "resnet8-none-seed1", "resnet8-uniform-p0.5-seed1"]


def test_a_densenet_sweep_is_named_constant_depth_and_refuses_a_rule(sweep):
    base, _ = sweep
    points = sweep_grid(base.override(model="densenet_bc_100_12"), {"final_survival_prob": [0.3, 0.7], "seed": [1]})
    assert [point.name for point in points] == ["densenet_bc_100_12-none-seed1"]
    with pytest.raises(ValueError, match="does not apply"):
        sweep_grid(base.override(model="densenet_bc_100_12"), {"survival_rule": ["linear"]})


def test_a_sweep_started_again_does_only_what_is_left(sweep, monkeypatch):
    base, out = sweep
    finished = out / "runs" / "resnet8-none-seed1"
    summary_time = RunFolder(finished).summary.stat().st_mtime_ns
    interrupted = RunFolder(out / "runs" / "resnet8-linear-p0.3-seed2")
    interrupted.summary.unlink()
    done = run_sweep(base, GRID, out)
    assert done.pop("resnet8-linear-p0.3-seed2") == "resumed"
    assert set(done.values()) == {"finished"}
    assert RunFolder(finished).summary.stat().st_mtime_ns == summary_time
    assert interrupted.summary.is_file()


def _row(report: str, section: str, setting: str) -> list[str]:
    """The cells of ``setting``'s row in the table under the heading that starts with ``section``."""
    table = report.split(f"## {section}")[1].split("\n## ")[0]
    line = next(line for line in table.splitlines() if f"| {setting} |" in line)
    return [cell.strip() for cell in line.strip("|").split("|")]


def _expected(out: Path, prefix: str, key: str) -> str:
    values = [json.loads((path / "summary.json").read_text())[key] for path in sorted((out / "runs").glob(prefix))]
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_tables_hold_the_runs_numbers_and_figures_are_images(sweep, tmp_path):
    _, out = sweep
    report_path, warnings = write_report([out, tmp_path / "not-a-run"], tmp_path / "report")
    report = report_path.read_text()
    assert warnings == [f"{tmp_path / 'not-a-run'}: not a run folder or a folder of runs; skipped"]
    constant = _row(report, "Results", "constant depth")
    assert constant[0] == "fashion-mnist / resnet8" and constant[2] == "2"
    assert constant[3] == _expected(out, "resnet8-none-*", "test_error_at_best_val")
    assert constant[4] == _expected(out, "resnet8-none-*", "final_test_error")
    stochastic = _row(report, "Results", "stochastic (linear, p_L=0.7)")
    assert stochastic[3] == _expected(out, "resnet8-linear-p0.7-*", "test_error_at_best_val")
    baseline = float(constant[3].split()[0])
    improvement = 100 * (baseline - float(stochastic[3].split()[0])) / baseline
    assert stochastic[5] == f"{improvement:+.1f}%"
    timing = _row(report, "Training time", "stochastic (linear, p_L=0.3)")
    assert timing[6] == "0.533"  # mean p_l of resnet8 at p_L = 0.3: (1 - 0.7/3 + 1 - 1.4/3 + 0.3) / 3
    assert _row(report, "Training time", "constant depth")[5] == "1.000"
    expected_size = (round(plots.FIGURE_SIZE[0] * plots.DPI), round(plots.FIGURE_SIZE[1] * plots.DPI))
    images = sorted(path.name for path in (tmp_path / "report").glob("*.png"))
    assert images == [
        "curves_1_fashion-mnist_resnet8.png",
        "gradients_1_fashion-mnist_resnet8.png",
        "survival_profiles.png",
        "sweep_1_fashion-mnist_resnet8.png",
    ]
    for name in images:
        assert _png_size(tmp_path / "report" / name) == expected_size
        assert f"]({name})" in report


def _copy_run(source: Path, target: Path, edit=None) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints", "run.lock"))
    if edit is not None:
        config = json.loads((target / "config.json").read_text())
        edit(config)
        (target / "config.json").write_text(json.dumps(config))


def test_runs_of_other_setups_form_their_own_labelled_groups_and_repeated_seeds_are_set_aside(sweep, tmp_path):
    _, out = sweep
    runs = tmp_path / "runs"
    source = out / "runs" / "resnet8-none-seed1"
    _copy_run(source, runs / "a")
    _copy_run(source, runs / "a-again")
    _copy_run(source, runs / "bigger", lambda config: config["data"].update(train_size=256))
    _copy_run(source, runs / "longer", lambda config: config["optim"].update(epochs=3))
    _, warnings = write_report([runs], tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    table = report.split("## Results")[1].split("\n## ")[0]
    labels = [line.split("|")[1].strip() for line in table.splitlines() if "| constant depth |" in line]
    assert labels == [
        "fashion-mnist / resnet8 (train_size=128, epochs=2)",
        "fashion-mnist / resnet8 (train_size=128, epochs=3)",
        "fashion-mnist / resnet8 (train_size=256, epochs=2)",
    ]
    assert [warning.split(":")[0] for warning in warnings] == [str(runs / "a-again")]
    assert "repeats seed 1" in warnings[0]


def test_text_from_run_folders_cannot_break_the_report_or_choose_file_names(sweep, tmp_path):
    _, out = sweep
    runs = tmp_path / "runs"
    _copy_run(out / "runs" / "resnet8-none-seed1", runs / "x|<img src=y>")
    _copy_run(
        out / "runs" / "resnet8-none-seed1",
        runs / "evil",
        lambda config: config["model"].update(survival_rule="x/../../EVIL"),
    )
    _, warnings = write_report([runs], tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    assert "<img" not in report and "x\\|&lt;img src=y&gt;" in report
    assert any("evil" in warning and "survival_rule" in warning for warning in warnings)
    assert all(path.parent == tmp_path / "report" for path in (tmp_path / "report").rglob("*"))
    assert not list(tmp_path.glob("**/EVIL*"))
    with pytest.raises(ValueError, match="inside the run folder"):
        write_report([runs], runs / "x|<img src=y>" / "report")


def test_running_and_incomplete_runs_are_marked(sweep, tmp_path):
    _, out = sweep
    running = RunFolder(out / "runs" / "resnet8-none-seed2")
    with running.claim():
        runs, _ = find_runs([out])
    status = {run.path.name: run.status for run in runs}
    assert status["resnet8-none-seed2"] == "running"
    assert status["resnet8-none-seed1"] == "finished"
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        (partial / name).write_text((out / "runs" / "resnet8-none-seed1" / name).read_text())
    (runs,), _ = find_runs([partial])
    assert runs.status == "incomplete"


def test_reproduce_trains_the_preset_and_its_twin_and_writes_the_report(tmp_path, synthetic_data_dir):
    argv = [
        "reproduce",
        "fashion-mnist-resnet110",
        "--model",
        "resnet8",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--train-size",
        "64",
        "--eval-size",
        "32",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--data-dir",
        str(synthetic_data_dir),
        "--out",
        str(tmp_path / "repro"),
    ]
    assert main(argv) == 0
    assert {path.name for path in (tmp_path / "repro" / "runs").iterdir()} == {
        "resnet8-linear-p0.5-seed1",
        "resnet8-none-seed1",
    }
    report = (tmp_path / "repro" / "report" / "report.md").read_text()
    assert "| constant depth |" in report and "| stochastic (linear, p_L=0.5) |" in report
    assert (
        torch.load(tmp_path / "repro" / "runs" / "resnet8-none-seed1" / "checkpoints" / "last.pt", weights_only=True)[
            "epoch"
        ]
        == 1
    )


def test_report_of_nothing_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 2
    assert "no runs found" in capsys.readouterr().err


def test_a_time_ratio_of_runs_not_timed_side_by_side_is_marked_not_comparable(sweep, tmp_path):
    from stochdepth.analysis.report import timing_caveat

    _, out = sweep
    paths = {}
    for name in ("resnet8-none-seed1", "resnet8-linear-p0.3-seed1"):
        paths[name] = tmp_path / name
        _copy_run(out / "runs" / name, paths[name])
        folder = RunFolder(paths[name])
        records = [{**record, "images_per_second": 500.0} for record in folder.read_metrics()]
        folder.metrics.write_text("".join(json.dumps(record) + "\n" for record in records))

    def runs():
        return sorted(find_runs([tmp_path])[0], key=lambda run: run.path.name)

    for path in paths.values():  # both trained from t = 1000 s to 2000 s
        os.utime(path / "config.json", (1000, 1000))
        os.utime(path / "metrics.jsonl", (2000, 2000))
    assert timing_caveat(runs()) is None
    os.utime(paths["resnet8-none-seed1"] / "config.json", (3000, 3000))
    os.utime(paths["resnet8-none-seed1"] / "metrics.jsonl", (4000, 4000))
    assert timing_caveat(runs()) == "the runs did not train at the same time"
    folder = RunFolder(paths["resnet8-linear-p0.3-seed1"])
    records = folder.read_metrics()
    records[0]["images_per_second"] = 250.0
    folder.metrics.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert "speed varied by 67%" in timing_caveat(runs()), "(500 - 250) / median 375"
    report = write_report([tmp_path / name for name in paths], tmp_path / "report")[0].read_text()
    assert _row(report, "Training time", "stochastic (linear, p_L=0.3)")[5].endswith("(not comparable, note 1)")
    assert "1. Not timed side by side: fashion-mnist / resnet8, stochastic (linear, p_L=0.3): a run's speed" in report


def test_blocks_run_per_step_weigh_each_record_by_its_steps():
    from stochdepth.analysis.runs import realised_blocks_per_step

    records = [{"iteration": 10, "mean_active_blocks": 8.0}, {"iteration": 40, "mean_active_blocks": 6.0}]
    assert realised_blocks_per_step(records) == pytest.approx((10 * 8.0 + 30 * 6.0) / 40)
    assert realised_blocks_per_step([{"iteration": 10, "mean_active_blocks": "x"}]) is None
    assert realised_blocks_per_step([]) is None


def test_hostile_values_in_runs_are_skipped_or_drawn_literally(sweep, tmp_path):
    _, out = sweep
    source = out / "runs" / "resnet8-none-seed1"

    def overflowing(config):
        config["run"]["seed"] = 7

    _copy_run(source, tmp_path / "big", overflowing)
    folder = RunFolder(tmp_path / "big")
    records = [{**record, "val_error": 1e308, "epoch_seconds": 1e308} for record in folder.read_metrics()]
    folder.metrics.write_text("".join(json.dumps(record) + "\n" for record in records))

    def mathtext(config):
        config["model"]["init_weights"] = "$x^{^}$"

    _copy_run(source, tmp_path / "odd", mathtext)
    _copy_run(source, tmp_path / "plain")
    report_path, warnings = write_report([tmp_path / name for name in ("big", "odd", "plain")], tmp_path / "report")
    assert any("big" in warning and "values out of range (val_error, epoch_seconds)" in warning for warning in warnings)
    report = report_path.read_text()
    assert "$x^{^}$" in report.replace("\\$", "$"), "the odd run is a group of its own, labelled with its setting"
    assert len(list((tmp_path / "report").glob("curves_*.png"))) == 2


def test_a_report_removes_what_a_killed_report_left_and_keeps_a_live_writers_file(sweep, tmp_path):
    import subprocess
    import sys

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "report"
    out.mkdir()
    stale = out / f".curves_x.png.{int(finished.stdout)}.tmp"
    live = out / f".curves_y.png.{os.getpid()}.tmp"
    stale.write_bytes(b"half a figure")
    live.write_bytes(b"being written")
    write_report([sweep[1]], out)
    assert not stale.exists()
    assert live.exists()


def test_a_time_scheduled_run_is_compared_with_constant_depth_in_one_group_and_named_by_its_schedule(sweep, tmp_path):
    _, out = sweep
    runs = tmp_path / "runs"
    _copy_run(out / "runs" / "resnet8-none-seed1", runs / "constant")
    _copy_run(
        out / "runs" / "resnet8-linear-p0.3-seed1",
        runs / "late",
        lambda config: config["model"].update(time_schedule="late", time_schedule_fraction=0.25),
    )
    write_report([runs], tmp_path / "report")
    table = (tmp_path / "report" / "report.md").read_text().split("## Results")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| fashion-mnist")]
    assert len({row.split("|")[1] for row in rows}) == 1, "one group: the schedule is what is compared"
    assert any("stochastic (linear, p_L=0.3, late 0.25)" in row for row in rows)


def test_curves_with_bands_draw_each_arms_mean_and_one_standard_error(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.setdefault("figure", figure) and path)
    curves = {"constant": [[(1, 2.0), (2, 1.0)], [(1, 4.0), (2, 3.0)]], "layer drop": [[(1, 5.0), (2, 4.5)]]}
    plots.curves_with_bands(curves, "step", "loss", "title", tmp_path / "bands.png")
    axis = drawn["figure"].axes[0]
    lines = {line.get_label().split(" (")[0]: list(line.get_ydata()) for line in axis.get_lines()}
    assert lines == {"constant": [3.0, 2.0], "layer drop": [5.0, 4.5]}
    constant_band = axis.collections[0].get_paths()[0].vertices[:, 1]
    assert min(constant_band) == pytest.approx(2.0 - 1.0) and max(constant_band) == pytest.approx(3.0 + 1.0)
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["constant (2 seeds)", "layer drop (1 seed)"]
