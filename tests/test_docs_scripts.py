"""The experiment scripts in docs/scripts reproduce the tables in docs from the per-run numbers kept in docs/data."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _assert_printed_lines_are_in_results_md(script: str, numbers: str, *options: str) -> None:
    printed = subprocess.run(
        [sys.executable, str(ROOT / "docs/scripts" / script), "table", str(ROOT / "docs/data" / numbers), *options],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    results = (ROOT / "docs/results.md").read_text().splitlines()
    assert len(printed) > 2
    missing = [line for line in printed if line.strip() and line not in results]
    assert not missing, f"lines of the script's table not in docs/results.md: {missing}"


@pytest.mark.parametrize(
    ("numbers", "options"),
    [
        ("time_schedule_pilot_2700_steps.json", ["--go-no-go", "540", "810", "1080", "1350"]),
        ("time_schedule_runs.json", ["--go-no-go", "540", "1080", "1620", "2160", "2700"]),
        ("time_schedule_runs.json", []),
        ("time_schedule_runs.json", ["--recalibrated", str(ROOT / "docs/data/recalibrated_batchnorm_runs.json")]),
    ],
)
def test_the_time_schedule_analysis_reproduces_the_tables_in_results_md(numbers, options):
    _assert_printed_lines_are_in_results_md("time_schedule_analysis.py", numbers, *options)


@pytest.mark.parametrize("numbers", ["language_model_runs_400_steps.json", "language_model_runs.json"])
def test_the_language_model_experiment_reproduces_its_tables_in_results_md(numbers):
    pytest.importorskip("transformers")
    _assert_printed_lines_are_in_results_md("language_model_experiment.py", numbers)


@pytest.mark.parametrize("setting", [["--steps", "0"], ["--batch", "-1"], ["--lr", "0"]])
def test_the_language_model_experiment_refuses_a_size_below_one_in_one_line(setting, tmp_path):
    pytest.importorskip("transformers")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "docs/scripts/language_model_experiment.py"),
            "run",
            str(tmp_path / "out.json"),
            *setting,
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert setting[0] in done.stderr.splitlines()[-1]
    assert not (tmp_path / "out.json").exists()


def test_the_recalibration_script_refuses_a_folder_that_is_not_a_run_in_one_line(tmp_path):
    (tmp_path / "not-a-run").mkdir()
    for source in (tmp_path / "missing", tmp_path / "not-a-run"):
        done = subprocess.run(
            [sys.executable, str(ROOT / "docs/scripts/recalibrated_validation.py"), str(source)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2, done.stderr
        assert str(source) in done.stderr.splitlines()[-1]
        assert "Traceback" not in done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["not-a-run"]
    assert not any((tmp_path / "not-a-run").iterdir())


def test_the_time_schedule_analysis_refuses_a_missing_file_or_a_rerun_without_its_stored_run_in_one_line(tmp_path):
    script = str(ROOT / "docs/scripts/time_schedule_analysis.py")
    stored = str(ROOT / "docs/data/time_schedule_runs.json")
    reruns = json.loads((ROOT / "docs/data/recalibrated_batchnorm_runs.json").read_text())
    (tmp_path / "foreign.json").write_text(json.dumps([{**reruns[0], "seed": 99}]))
    for argv, named in (
        (["table", str(tmp_path / "none.json")], "none.json"),
        (["table", stored, "--recalibrated", str(tmp_path / "foreign.json")], "no stored run"),
    ):
        done = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True)
        assert done.returncode == 2 and named in done.stderr.splitlines()[-1], done.stderr
        assert "Traceback" not in done.stderr
