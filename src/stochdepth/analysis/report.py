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

import json
import math
import os
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stochdepth.analysis import plots
from stochdepth.analysis.runs import Run, expected_blocks_per_step, find_runs, realised_blocks_per_step
from stochdepth.files import WriteFailed, remove_stale_temporaries, write_text_atomically
from stochdepth.train.run_folder import RunFolder, is_number

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


def cell(text: object) -> str:
    """``text`` safe inside a markdown table cell: no HTML, no column breaks, one line."""
    escaped = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"\s+", " ", escaped.replace("|", "\\|").replace("`", "\\`"))


@dataclass
class Group:
    """Comparable runs (one training setup), by setting; ``label`` says what sets it apart from the others."""

    dataset: str
    model: str
    label: str
    settings: dict[str, list[Run]]

    @property
    def runs(self) -> list[Run]:
        return [run for members in self.settings.values() for run in members]


def _key(setup: dict[str, object]) -> str:
    return json.dumps(setup, sort_keys=True, default=str)


def group_runs(runs: list[Run]) -> tuple[list[Group], list[str]]:
    """Runs grouped by their whole training setup (``Run.setup``), then by setting; and warnings.

    Each group is labelled by its data set and model and, where several groups share them,
    by the options in which their setups differ. A run repeating the seed of another run of
    the same group and setting is set aside (with a warning), so no seed counts twice.
    """
    by_setup: dict[str, list[Run]] = defaultdict(list)
    for run in sorted(runs, key=lambda run: str(run.path)):
        by_setup[_key(run.setup())].append(run)
    differing = {
        option
        for members in by_setup.values()
        for other in by_setup.values()
        for option, value in members[0].setup().items()
        if (members[0].dataset, members[0].model) == (other[0].dataset, other[0].model)
        and other[0].setup().get(option) != value
    }
    groups, warnings = [], []
    for members in by_setup.values():
        first = members[0]
        details = ", ".join(f"{option.split('.', 1)[1]}={first.setup()[option]}" for option in sorted(differing))
        settings: dict[str, list[Run]] = defaultdict(list)
        for run in sorted(members, key=lambda run: (run.setting != "constant depth", run.setting, str(run.path))):
            twin = next((kept for kept in settings[run.setting] if kept.seed == run.seed), None)
            if twin is not None:
                warnings.append(f"{run.path}: set aside, it repeats seed {run.seed} of {twin.path}")
                continue
            settings[run.setting].append(run)
        label = f"{first.dataset} / {first.model}" + (f" ({details})" if details else "")
        groups.append(Group(first.dataset, first.model, label, dict(settings)))
    groups.sort(key=lambda group: (group.dataset, group.model, group.label))
    return groups, warnings


def _count(members: list[Run]) -> str:
    unfinished = [run.status for run in members if run.status != "finished"]
    notes = ", ".join(f"{unfinished.count(status)} {status}" for status in sorted(set(unfinished)))
    return f"{len(members)}" + (f" ({notes})" if notes else "")


def _values(members: list[Run], read: Callable[[Run], float | None]) -> list[float]:
    """The finite values ``read`` gives for ``members`` (a run that tested once, at its end, has no final one)."""
    return [value for value in map(read, members) if value is not None and math.isfinite(value)]


def results_table(groups: list[Group]) -> list[str]:
    """Markdown lines of the Table-1-like comparison."""
    lines = [
        "| runs compared | training depth | runs | test error at best val. (%) | final test error (%) "
        "| relative improvement |",
        "|---|---|---|---|---|---|",
    ]
    for group in groups:
        settings = group.settings
        constant = _values(settings.get("constant depth", []), Run.test_error_at_best_val)
        for setting, members in settings.items():
            best = _values(members, Run.test_error_at_best_val)
            improvement = "—"
            if constant and best and setting != "constant depth":
                baseline = statistics.fmean(constant)
                improvement = f"{PERCENT * (baseline - statistics.fmean(best)) / baseline:+.1f}%"
            lines.append(
                f"| {cell(group.label)} | {setting} | {_count(members)} | {_percent(best)} "
                f"| {_percent(_values(members, Run.final_test_error))} | {improvement} |"
            )
    return lines


def _per_epoch_seconds(run: Run) -> float | None:
    epochs = run.epochs_done
    return run.train_seconds() / epochs if epochs else None


def _realised_share(run: Run) -> float | None:
    blocks = len(run.survival_probs)
    realised = realised_blocks_per_step(run.metrics) if blocks else None
    return realised / blocks if realised is not None else None


def _expected_share(run: Run) -> float | None:
    """The schedule's expected share of branches run, over the steps trained (the mean p_l where records lack it)."""
    blocks = len(run.survival_probs)
    expected = expected_blocks_per_step(run.metrics) if blocks else None
    if expected is not None:
        return expected / blocks
    return statistics.fmean(run.survival_probs) if blocks else None


TIMING_SPREAD = 0.2
"""A run whose speed (images per second) varies more than this across its records was timed under a changing load."""


def timing_caveat(runs: list[Run]) -> str | None:
    """Why a time ratio between ``runs`` is not comparable, or ``None``.

    Times compare only when the runs were timed side by side: on a machine whose load changed
    (a run's images per second varying by more than ``TIMING_SPREAD``), or in runs that did
    not train at the same time, the ratio says as much about the machine as about the depth.
    """
    spreads = [spread for spread in map(_speed_spread, runs) if spread is not None]
    if spreads and max(spreads) > TIMING_SPREAD:
        return f"a run's speed varied by {max(spreads):.0%} (the machine's load changed)"
    intervals = [_training_interval(run) for run in runs]
    if None not in intervals and max(start for start, _ in intervals) > min(end for _, end in intervals):
        return "the runs did not train at the same time"
    return None


def _speed_spread(run: Run) -> float | None:
    speeds = [record["images_per_second"] for record in run.metrics if is_number(record.get("images_per_second"))]
    speeds = [speed for speed in speeds if math.isfinite(speed) and speed > 0]
    if len(speeds) < 2:
        return None
    return (max(speeds) - min(speeds)) / statistics.median(speeds)


def _training_interval(run: Run) -> tuple[float, float] | None:
    """When the run (last) started and last recorded: ``config.json``'s and ``metrics.jsonl``'s modification times."""
    folder = RunFolder(run.path)
    try:
        return folder.config.stat().st_mtime, folder.metrics.stat().st_mtime
    except OSError:
        return None


def timing_table(groups: list[Group]) -> list[str]:
    """Markdown lines of the Table-2-like training-time comparison, with a note under ratios that do not compare."""
    lines = [
        "| runs compared | training depth | runs | total time | time per epoch | ratio to constant "
        "| expected ratio (mean p_l over the steps) | realised ratio (blocks run) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for group in groups:
        settings = group.settings
        baseline = settings.get("constant depth", [])
        constant = _values(baseline, _per_epoch_seconds)
        for setting, members in settings.items():
            per_epoch = _values(members, _per_epoch_seconds)
            ratio = f"{statistics.fmean(per_epoch) / statistics.fmean(constant):.3f}" if constant and per_epoch else "—"
            caveat = timing_caveat(baseline + members) if ratio != "—" and members is not baseline else None
            if caveat is not None:
                notes.append(f"{group.label}, {setting}: {caveat}")
                ratio += f" (not comparable, note {len(notes)})"
            shares = _values(members, _expected_share)
            expected = f"{statistics.fmean(shares):.3f}" if shares else "—"
            realised = _values(members, _realised_share)
            lines.append(
                f"| {cell(group.label)} | {setting} | {_count(members)} "
                f"| {_seconds(statistics.fmean(run.train_seconds() for run in members))} "
                f"| {_seconds(statistics.fmean(per_epoch)) if per_epoch else '—'} | {ratio} | {expected} "
                f"| {f'{statistics.fmean(realised):.3f}' if realised else '—'} |"
            )
    if notes:
        lines.append("")
        lines += [f"{number}. Not timed side by side: {cell(note)}." for number, note in enumerate(notes, 1)]
        lines.append(
            "Time stochastic against constant depth side by side, in one process, with `benchmarks/step_time.py` "
            "(docs/benchmarks.md)."
        )
    return lines


def runs_table(runs: list[Run], base: Path) -> list[str]:
    lines = ["| run | status | epochs | best val. error (%) | test error at best val. (%) |", "|---|---|---|---|---|"]
    for run in sorted(runs, key=lambda run: str(run.path)):
        best = run.best()
        name = run.path.relative_to(base) if run.path.is_relative_to(base) else run.path
        test = _percent(_values([run], Run.test_error_at_best_val))
        val = _percent([best["val_error"]]) if best else "—"
        lines.append(f"| {cell(name)} | {run.status} | {run.epochs_done:g} / {run.planned_epochs} | {val} | {test} |")
    return lines


def _figures(groups: list[Group], out: Path) -> list[tuple[str, Path]]:
    figures = []
    for index, group in enumerate(groups, 1):
        stem = f"{index}_{_slug(group.dataset)}_{_slug(group.model)}"
        members = [run for run in group.runs if run.metrics]
        if members:
            path = plots.error_curves(members, group.label, _target(out / f"curves_{stem}.png"))
            figures.append((f"Error curves, {group.label}", path))
        recorded = [run for run in members if run.gradients]
        if recorded:
            path = plots.gradient_magnitudes(recorded, group.label, _target(out / f"gradients_{stem}.png"))
            figures.append((f"Gradient magnitudes, {group.label}", path))
        stochastic = [run for run in group.runs if run.survival_rule != "none"]
        if len({run.final_survival_prob for run in stochastic}) > 1:
            title = f"{group.label}: test error against p_L"
            path = plots.error_against_final_survival_prob(group.runs, title, _target(out / f"sweep_{stem}.png"))
            figures.append((title, path))
    by_setup: dict[str, list[Run]] = defaultdict(list)
    for group in groups:
        for run in group.runs:
            setup = {key: value for key, value in run.setup().items() if key != "model.model"}
            by_setup[_key({**setup, "rule": run.survival_rule})].append(run)
    for index, members in enumerate(by_setup.values(), 1):
        stochastic = [run for run in members if run.survival_rule != "none"]
        depths = {len(run.survival_probs) for run in stochastic}
        if len(depths) > 1 and len({run.final_survival_prob for run in stochastic}) > 1:
            rule = stochastic[0].survival_rule
            title = f"{stochastic[0].dataset}, {rule} rule: test error by depth and p_L"
            path = plots.depth_heat_map(stochastic, title, _target(out / f"heatmap_{index}_{rule}.png"))
            figures.append((title, path))
    runs = [run for group in groups for run in group.runs]
    if any(run.survival_probs for run in runs):
        path = plots.survival_profiles(runs, _target(out / "survival_profiles.png"))
        figures.append(("Survival profiles", path))
    return figures


def _target(path: Path) -> Path:
    """A path in the report folder that is safe to write: a symbolic link there is removed, never followed."""
    if path.is_symlink():
        path.unlink()
    elif path.exists() and not path.is_file():
        raise ValueError(f"cannot write {path}: it is not a file")
    return path


def _check_out(out: Path, runs: list[Run]) -> None:
    """Refuse an ``--out`` that is a link or a file, or that lies inside a run folder being read."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ValueError(f"the report folder {out} must be a folder (not a file or a symbolic link)")
    resolved = out.resolve()
    for run in runs:
        if resolved == run.path.resolve() or resolved.is_relative_to(run.path.resolve()):
            raise ValueError(
                f"the report folder {out} lies inside the run folder {run.path}; the report never writes there"
            )


def write_report(paths: list[str | Path], out: str | Path) -> tuple[Path, list[str]]:
    """Write ``report.md`` and its figures into ``out``; returns its path and the warnings."""
    runs, warnings = find_runs(paths)
    if not runs:
        skipped = f" ({'; '.join(warnings)})" if warnings else ""
        raise ValueError("no runs found in " + ", ".join(map(str, paths)) + skipped)
    out = Path(out)
    _check_out(out, runs)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create the report folder {out}: {error.strerror or error}") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"cannot write into the report folder {out}: not writable")
    remove_stale_temporaries(out)
    groups, set_aside = group_runs(runs)
    warnings = [*warnings, *set_aside]
    lines = ["# stochdepth report", ""]
    lines += [
        f"{len(runs)} runs in {len(groups)} group(s) of comparable runs (the same training setup; "
        "a group's label names what sets it apart). Errors are percentages; ± is the standard deviation "
        "over seeds.",
        "",
    ]
    lines += ["## Results (as the paper's Table 1)", "", *results_table(groups), ""]
    lines += ["## Training time (as the paper's Table 2)", "", *timing_table(groups), ""]
    lines += ["## Figures", ""]
    try:
        figures = _figures(groups, out)
    except WriteFailed as error:
        raise ValueError(str(error)) from None
    for caption, path in figures:
        lines += [f"### {cell(caption)}", "", f"![figure]({path.name})", ""]
    lines += ["## Runs", "", *runs_table(runs, Path.cwd()), ""]
    if warnings:
        lines += ["## Set aside or skipped", "", *(f"- {cell(warning)}" for warning in warnings), ""]
    report = _target(out / "report.md")
    try:
        write_text_atomically(report, "\n".join(lines))
    except WriteFailed as error:
        raise ValueError(str(error)) from None
    return report, warnings
