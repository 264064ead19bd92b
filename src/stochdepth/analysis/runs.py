"""Reading run folders for the report: what each run is, how far it got, and its results."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stochdepth.depth.schedule import ROW_MODES
from stochdepth.train.run_folder import RunFolder, check_metric_records, in_range, is_number

MAX_SEARCH_DEPTH = 3


@dataclass
class Run:
    """One run folder as the report sees it."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    gradients: list[dict[str, Any]]
    summary: dict[str, Any] | None
    status: str

    @property
    def dataset(self) -> str:
        return self.config["data"]["dataset"]

    @property
    def model(self) -> str:
        return self.config["model"]["model"]

    @property
    def survival_rule(self) -> str:
        """As the run resolved it (``config.json`` holds resolved options, never a default to re-derive)."""
        return self.config["model"]["survival_rule"]

    @property
    def final_survival_prob(self) -> float:
        return float(self.config["model"]["final_survival_prob"])

    @property
    def survival_probs(self) -> list[float]:
        return list(self.config.get("survival_probs") or [])

    @property
    def seed(self) -> int:
        return int(self.config["run"]["seed"])

    def setup(self) -> dict[str, Any]:
        """The training configuration apart from what runs of one comparison may differ in.

        Left out: the seed, the stochastic-depth options being compared, and where and on
        what the run was written (output folder, device, data folder, download, workers).
        Runs with equal setups are comparable, whatever their seeds and survival rules.
        """
        ignored = {
            "model": {
                "survival_rule",
                "final_survival_prob",
                "drop_mode",
                "scaling",
                "time_schedule",
                "time_schedule_fraction",
            },
            "data": {"data_dir", "download", "workers"},
            "optim": set(),
            "run": {"seed", "out", "device"},
        }
        return {
            f"{section}.{key}": value
            for section, skip in ignored.items()
            for key, value in sorted(self.config[section].items())
            if key not in skip
        }

    @property
    def planned_epochs(self) -> int:
        return int(self.config["optim"]["epochs"])

    @property
    def setting(self) -> str:
        """How deep it trained: "constant depth" or "stochastic (rule, p_L)"."""
        if self.survival_rule == "none" or not self.survival_probs:
            return "constant depth"
        model = self.config["model"]
        mode = f", {model['drop_mode']}" if model.get("drop_mode") in ROW_MODES else ""
        scaling = ", inverted" if model.get("scaling") == "inverted" else ""
        schedule = model.get("time_schedule", "constant")
        timing = f", {schedule} {model.get('time_schedule_fraction', 0.5):g}" if schedule != "constant" else ""
        return f"stochastic ({self.survival_rule}, p_L={self.final_survival_prob:g}{mode}{scaling}{timing})"

    @property
    def epochs_done(self) -> float:
        return self.metrics[-1]["epoch"] if self.metrics else 0.0

    def best(self) -> dict[str, Any] | None:
        """The evaluation with the lowest validation error so far (the paper's model selection)."""
        finite = [record for record in self.metrics if not math.isnan(record["val_error"])]
        return min(finite, key=lambda record: record["val_error"]) if finite else None

    def test_error_at_best_val(self) -> float | None:
        """From the best evaluation's record, or the summary's where the test set was evaluated once, at the end."""
        best = self.best()
        if best is None:
            return None
        measured_once = self.summary.get("test_error_at_best_val") if self.summary else None
        if math.isnan(best["test_error"]) and is_number(measured_once):
            return float(measured_once)
        return best["test_error"]

    def final_test_error(self) -> float | None:
        return self.metrics[-1]["test_error"] if self.metrics else None

    def train_seconds(self) -> float:
        return sum(record["epoch_seconds"] for record in self.metrics)


def realised_blocks_per_step(records: list[dict[str, Any]]) -> float | None:
    """Residual branches run per training step over the whole run, from its metrics records.

    Each record's ``mean_active_blocks`` is the mean over the steps since the record before
    it, so the records are weighted by those steps (evaluations need not be evenly spaced).
    ``None`` when the records do not say.
    """
    return blocks_per_step(records, "mean_active_blocks")


def expected_blocks_per_step(records: list[dict[str, Any]]) -> float | None:
    """The survival schedule's expected branches per step over the run (a time schedule's mean), from its records."""
    return blocks_per_step(records, "expected_active_blocks")


def blocks_per_step(records: list[dict[str, Any]], key: str) -> float | None:
    """The records' ``key`` (a mean over the steps since the record before), averaged over the whole run."""
    keys = ("iteration", key)
    if not records or not all(is_number(record.get(key)) for record in records for key in keys):
        return None
    starts = [0] + [record["iteration"] for record in records[:-1]]
    steps = [record["iteration"] - start for record, start in zip(records, starts)]
    if sum(steps) <= 0:
        return None
    return sum(record[key] * count for record, count in zip(records, steps)) / sum(steps)


def _check_records(folder: RunFolder, metrics: list[dict[str, Any]], gradients: list[dict[str, Any]]) -> None:
    """Refuse records a report cannot use (a run folder from elsewhere is untrusted input)."""
    check_metric_records(folder.metrics, metrics)
    for number, record in enumerate(gradients, 1):
        blocks = record.get("blocks")
        values = [record.get("stem"), *(blocks if isinstance(blocks, list) else [""])]
        if not is_number(record.get("iteration")) or not all(v is None or is_number(v) for v in values):
            raise ValueError(f"{folder.gradients}: line {number} is not a gradient record")


def _read_run(path: Path) -> Run:
    folder = RunFolder(path)
    _, config = folder.read_config()
    probs = config.get("survival_probs", [])
    if not isinstance(probs, list) or not all(is_number(prob) and 0 <= prob <= 1 for prob in probs):
        raise ValueError(f"{folder.config}: survival_probs must be a list of probabilities")
    summary = json.loads(folder.summary.read_text()) if folder.summary.is_file() else None
    if summary is not None and not isinstance(summary, dict):
        raise ValueError(f"{folder.summary}: not an object")
    if summary is not None and any(
        is_number(summary.get(key)) and not in_range("val_error", summary[key])
        for key in ("best_val_error", "test_error_at_best_val", "final_test_error", "final_val_error")
    ):
        raise ValueError(f"{folder.summary}: an error rate out of [0, 1]")
    metrics = folder.read_metrics()
    gradients = folder.read_records(folder.gradients)
    _check_records(folder, metrics, gradients)
    if folder.is_locked():
        status = "running"
    elif summary is not None and summary.get("epochs") == config["optim"]["epochs"]:
        status = "finished"
    else:
        status = "incomplete"
    return Run(path, config, metrics, gradients, summary, status)


def find_runs(paths: list[str | Path]) -> tuple[list[Run], list[str]]:
    """The runs in ``paths`` (run folders, or folders holding them), and warnings for what was skipped."""
    runs: list[Run] = []
    warnings: list[str] = []
    for given in map(Path, paths):
        if (given / "config.json").is_file():
            candidates = [given]
        elif given.is_dir():
            candidates = sorted(
                config.parent
                for depth in range(1, MAX_SEARCH_DEPTH + 1)
                for config in given.glob("/".join(["*"] * depth) + "/config.json")
            )
        else:
            candidates = []
        if not candidates:
            warnings.append(f"{given}: not a run folder or a folder of runs; skipped")
        for candidate in candidates:
            try:
                runs.append(_read_run(candidate))
            except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
                warnings.append(f"{candidate}: unreadable run ({error}); skipped")
    return runs, warnings
