"""The report: the paper's tables and figures for a set of runs, as ``report.md`` and PNG files.

* Results (Table 1): per data set and model, constant vs stochastic depth, test error at the
  best validation evaluation and final test error (mean ± standard deviation over seeds),
  relative improvement over constant depth.
* Training time (Table 2): total and per-epoch time, the stochastic/constant ratio, and the
  ratio the survival schedule predicts (mean p_l) next to the realised one (mean blocks run).
* Figures: error curves, gradient magnitudes (when recorded), error against p_L and the
  depth x p_L heat map for sweeps, the survival profiles.

Runs still training are reported up to their last evaluation and marked "running"; stopped
unfinished runs are marked "incomplete".
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from stochdepth.analysis import plots
from stochdepth.analysis.runs import Run, find_runs

PERCENT = 100.0


def mean_and_deviation(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (``None`` for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _percent(values: Sequence[float]) -> str:
    if not values:
        return "—"
    mean, deviation = mean_and_deviation(values)
    return f"{PERCENT * mean:.2f}" + (f" ± {PERCENT * deviation:.2f}" if deviation is not None else "")


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 3600 else f"{value / 3600:.2f} h"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _groups(runs: list[Run]) -> dict[tuple[str, str], dict[str, list[Run]]]:
    """runs[(dataset, model)][setting], constant depth first within each group."""
    groups: dict[tuple[str, str], dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs, key=lambda run: (run.dataset, run.model, run.setting != "constant depth", run.setting)):
        groups[(run.dataset, run.model)][run.setting].append(run)
    return groups


def _count(members: list[Run]) -> str:
    unfinished = [run.status for run in members if run.status != "finished"]
    notes = ", ".join(f"{unfinished.count(status)} {status}" for status in sorted(set(unfinished)))
    return f"{len(members)}" + (f" ({notes})" if notes else "")


def _values(members: list[Run], read: Callable[[Run], float | None]) -> list[float]:
    return [value for value in map(read, members) if value is not None]


def results_table(runs: list[Run]) -> list[str]:
    """Markdown lines of the Table-1-like comparison."""
    lines = [
        "| data set | model | training depth | runs | test error at best val. (%) | final test error (%) "
        "| relative improvement |",
        "|---|---|---|---|---|---|---|",
    ]
    for (dataset, model), settings in _groups(runs).items():
        constant = _values(settings.get("constant depth", []), Run.test_error_at_best_val)
        for setting, members in settings.items():
            best = _values(members, Run.test_error_at_best_val)
            improvement = "—"
            if constant and best and setting != "constant depth":
                baseline = statistics.fmean(constant)
                improvement = f"{PERCENT * (baseline - statistics.fmean(best)) / baseline:+.1f}%"
            lines.append(
                f"| {dataset} | {model} | {setting} | {_count(members)} | {_percent(best)} "
                f"| {_percent(_values(members, Run.final_test_error))} | {improvement} |"
            )
    return lines


def _per_epoch_seconds(run: Run) -> float | None:
    epochs = run.epochs_done
    return run.train_seconds() / epochs if epochs else None


def _realised_share(run: Run) -> float | None:
    blocks = len(run.survival_probs)
    if not blocks or not run.metrics:
        return None
    return statistics.fmean(record["mean_active_blocks"] for record in run.metrics) / blocks


def timing_table(runs: list[Run]) -> list[str]:
    """Markdown lines of the Table-2-like training-time comparison."""
    lines = [
        "| data set | model | training depth | runs | total time | time per epoch | ratio to constant "
        "| expected ratio (mean p_l) | realised ratio (blocks run) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, model), settings in _groups(runs).items():
        constant = _values(settings.get("constant depth", []), _per_epoch_seconds)
        for setting, members in settings.items():
            per_epoch = _values(members, _per_epoch_seconds)
            ratio = f"{statistics.fmean(per_epoch) / statistics.fmean(constant):.3f}" if constant and per_epoch else "—"
            probs = members[0].survival_probs
            expected = f"{statistics.fmean(probs):.3f}" if probs else "—"
            realised = _values(members, _realised_share)
            lines.append(
                f"| {dataset} | {model} | {setting} | {_count(members)} "
                f"| {_seconds(statistics.fmean(run.train_seconds() for run in members))} "
                f"| {_seconds(statistics.fmean(per_epoch)) if per_epoch else '—'} | {ratio} | {expected} "
                f"| {f'{statistics.fmean(realised):.3f}' if realised else '—'} |"
            )
    return lines


def runs_table(runs: list[Run], base: Path) -> list[str]:
    lines = ["| run | status | epochs | best val. error (%) | test error at best val. (%) |", "|---|---|---|---|---|"]
    for run in sorted(runs, key=lambda run: str(run.path)):
        best = run.best()
        name = run.path.relative_to(base) if run.path.is_relative_to(base) else run.path
        val, test = (_percent([best["val_error"]]), _percent([best["test_error"]])) if best else ("—", "—")
        lines.append(f"| {name} | {run.status} | {run.epochs_done:g} / {run.planned_epochs} | {val} | {test} |")
    return lines


def _figures(runs: list[Run], out: Path) -> list[tuple[str, Path]]:
    figures = []
    for (dataset, model), settings in _groups(runs).items():
        members = [run for group in settings.values() for run in group if run.metrics]
        if members:
            title = f"{dataset} / {model}"
            path = out / f"curves_{_slug(dataset)}_{_slug(model)}.png"
            figures.append((f"Error curves, {title}", plots.error_curves(members, title, path)))
        recorded = [run for run in members if run.gradients]
        if recorded:
            path = out / f"gradients_{_slug(dataset)}_{_slug(model)}.png"
            figures.append((f"Gradient magnitudes, {title}", plots.gradient_magnitudes(recorded, title, path)))
    by_dataset: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_dataset[run.dataset].append(run)
    for dataset, members in sorted(by_dataset.items()):
        stochastic = [run for run in members if run.survival_rule != "none"]
        if len({run.final_survival_prob for run in stochastic}) > 1:
            path = out / f"sweep_{_slug(dataset)}.png"
            title = f"{dataset}: test error against p_L"
            figures.append((title, plots.error_against_final_survival_prob(members, title, path)))
            for rule in sorted({run.survival_rule for run in stochastic}):
                ruled = [run for run in stochastic if run.survival_rule == rule]
                if len({len(run.survival_probs) for run in ruled}) > 1:
                    path = out / f"heatmap_{_slug(dataset)}_{rule}.png"
                    title = f"{dataset}, {rule} rule: test error by depth and p_L"
                    figures.append((title, plots.depth_heat_map(ruled, title, path)))
    if any(run.survival_probs for run in runs):
        figures.append(("Survival profiles", plots.survival_profiles(runs, out / "survival_profiles.png")))
    return figures


def write_report(paths: list[str | Path], out: str | Path) -> tuple[Path, list[str]]:
    """Write ``report.md`` and its figures into ``out``; returns its path and the warnings."""
    runs, warnings = find_runs(paths)
    if not runs:
        raise ValueError("no runs found in " + ", ".join(map(str, paths)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# stochdepth report", ""]
    lines += [f"{len(runs)} runs. Errors are percentages; ± is the standard deviation over seeds.", ""]
    lines += ["## Results (as the paper's Table 1)", "", *results_table(runs), ""]
    lines += ["## Training time (as the paper's Table 2)", "", *timing_table(runs), ""]
    lines += ["## Figures", ""]
    for caption, path in _figures(runs, out):
        lines += [f"### {caption}", "", f"![{caption}]({path.name})", ""]
    lines += ["## Runs", "", *runs_table(runs, Path.cwd()), ""]
    if warnings:
        lines += ["## Skipped", "", *(f"- {warning}" for warning in warnings), ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report, warnings
