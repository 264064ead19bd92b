"""Reading run folders for the report: what each run is, how far it got, and its results."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stochdepth.train.run_folder import RunFolder

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
    def planned_epochs(self) -> int:
        return int(self.config["optim"]["epochs"])

    @property
    def setting(self) -> str:
        """How deep it trained: "constant depth" or "stochastic (rule, p_L)"."""
        if self.survival_rule == "none" or not self.survival_probs:
            return "constant depth"
        mode = ", sample" if self.config["model"].get("drop_mode") == "sample" else ""
        return f"stochastic ({self.survival_rule}, p_L={self.final_survival_prob:g}{mode})"

    @property
    def epochs_done(self) -> float:
        return self.metrics[-1]["epoch"] if self.metrics else 0.0

    def best(self) -> dict[str, Any] | None:
        """The evaluation with the lowest validation error so far (the paper's model selection)."""
        finite = [record for record in self.metrics if not math.isnan(record["val_error"])]
        return min(finite, key=lambda record: record["val_error"]) if finite else None

    def test_error_at_best_val(self) -> float | None:
        best = self.best()
        return best["test_error"] if best else None

    def final_test_error(self) -> float | None:
        return self.metrics[-1]["test_error"] if self.metrics else None

    def train_seconds(self) -> float:
        return sum(record["epoch_seconds"] for record in self.metrics)


def _read_run(path: Path) -> Run:
    folder = RunFolder(path)
    config = json.loads(folder.config.read_text())
    if not isinstance(config, dict) or not {"model", "data", "optim"} <= set(config):
        raise ValueError("config.json lacks the model, data or optim section")
    summary = json.loads(folder.summary.read_text()) if folder.summary.is_file() else None
    metrics = folder.read_metrics()
    if folder.is_locked():
        status = "running"
    elif summary is not None and summary.get("epochs") == config["optim"]["epochs"]:
        status = "finished"
    else:
        status = "incomplete"
    return Run(path, config, metrics, folder.read_records(folder.gradients), summary, status)


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
            except (OSError, ValueError, KeyError, TypeError) as error:
                warnings.append(f"{candidate}: unreadable run ({error}); skipped")
    return runs, warnings
