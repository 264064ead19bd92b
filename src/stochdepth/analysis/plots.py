"""The report's figures (matplotlib, written as PNG files of a fixed size).

Each function takes runs that belong together and writes one figure: error curves (the
paper's Fig. 3 and 4), gradient magnitudes (Fig. 7), error against p_L and the depth x p_L
heat map (Fig. 8), and the survival-probability profile of each model.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from stochdepth.analysis.runs import Run
from stochdepth.files import write_atomically

FIGURE_SIZE = (10.0, 4.2)
DPI = 110
PERCENT = 100.0


def _literal_text(draw: Callable[..., Path]) -> Callable[..., Path]:
    """Draw with every text taken literally: no mathtext, since run names and settings are untrusted text
    (``$x^{^}$`` would otherwise abort the figure)."""

    @functools.wraps(draw)
    def drawn(*args: object, **kwargs: object) -> Path:
        with plt.rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)

    return drawn


def _save(figure: plt.Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG, whole or not at all (a failure is :class:`~stochdepth.files.WriteFailed`)."""
    figure.tight_layout()
    try:
        write_atomically(path, lambda file: figure.savefig(file, dpi=DPI, format="png"))
    finally:
        plt.close(figure)
    return path


def _by_setting(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in sorted(runs, key=lambda run: (run.setting != "constant depth", run.setting)):
        groups[run.setting].append(run)
    return groups


def _mean_curve(runs: list[Run], key: str) -> tuple[list[float], list[float]]:
    """Epochs and the mean of ``key`` over the runs, up to the shortest run."""
    length = min(len(run.metrics) for run in runs)
    epochs = [runs[0].metrics[index]["epoch"] for index in range(length)]
    values = [sum(run.metrics[index][key] for run in runs) / len(runs) for index in range(length)]
    return epochs, values


def _integer_ticks(axis: plt.Axes) -> None:
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


@_literal_text
def error_curves(runs: list[Run], title: str, path: Path) -> Path:
    """Test error and training loss against epochs, one line per setting (mean over seeds).

    Each line is marked where its mean validation error is lowest (the model the paper's
    selection would keep), at the line's own test error there. Runs that evaluated the test
    set only once, at the end, show their validation error instead.
    """
    figure, (error_axis, loss_axis) = plt.subplots(1, 2, figsize=FIGURE_SIZE)
    tested = any(not math.isnan(record["test_error"]) for run in runs for record in run.metrics)
    shown = "test_error" if tested else "val_error"
    name = "test error" if tested else "validation error (the test set was evaluated once, at the end)"
    for setting, members in _by_setting(runs).items():
        members = [run for run in members if run.metrics]
        if not members:
            continue
        epochs, errors = _mean_curve(members, shown)
        (line,) = error_axis.plot(epochs, [PERCENT * value for value in errors], label=setting)
        _, validation = _mean_curve(members, "val_error")
        best = min(range(len(validation)), key=lambda index: (math.isnan(validation[index]), validation[index]))
        error_axis.plot(epochs[best], PERCENT * errors[best], "o", color=line.get_color(), markersize=7)
        epochs, losses = _mean_curve(members, "train_loss")
        loss_axis.plot(epochs, losses, label=setting, color=line.get_color())
    error_axis.plot([], [], "o", color="grey", label="lowest mean validation error")
    error_axis.set(xlabel="epoch", ylabel=f"{name.split(' (')[0]} (%)", title=name)
    loss_axis.set(xlabel="epoch", ylabel="training loss (cross-entropy)", title="training loss")
    figure.suptitle(title)
    for axis in (error_axis, loss_axis):
        _integer_ticks(axis)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _save(figure, path)


def _epoch_means(records: list[dict], pick) -> tuple[list[int], list[float]]:
    """Per whole epoch, the mean of the recorded values that exist (dropped blocks' nulls left out)."""
    sums: dict[int, list[float]] = defaultdict(list)
    for record in records:
        value = pick(record)
        if value is not None:
            sums[max(1, math.ceil(record["epoch"]))].append(value)
    epochs = sorted(sums)
    return epochs, [sum(sums[epoch]) / len(sums[epoch]) for epoch in epochs]


@_literal_text
def gradient_magnitudes(runs: list[Run], title: str, path: Path) -> Path:
    """Mean |gradient| against epochs: the stem and the first, a middle and the last block (Fig. 7)."""
    blocks = len(runs[0].gradients[0]["blocks"])
    panels = [("stem convolution", None)]
    if blocks:
        panels += [("block 1", 0), (f"block {blocks // 2 + 1}", blocks // 2), (f"block {blocks}", blocks - 1)]
    figure, axes = plt.subplots(1, len(panels), figsize=FIGURE_SIZE, sharey=True, squeeze=False)
    for axis, (label, block) in zip(axes[0], panels, strict=True):
        for setting, members in _by_setting(runs).items():
            records = [record for run in members for record in run.gradients]
            if block is None:
                epochs, values = _epoch_means(records, lambda record: record["stem"])
            else:
                epochs, values = _epoch_means(records, lambda record, block=block: record["blocks"][block])
            axis.plot(epochs, values, label=setting)
        axis.set(xlabel="epoch", title=label, yscale="log")
        _integer_ticks(axis)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean |gradient| of first conv weights")
    axes[0][0].legend(fontsize=7)
    figure.suptitle(f"{title}: gradient magnitude")
    return _save(figure, path)


@_literal_text
def error_against_final_survival_prob(runs: list[Run], title: str, path: Path) -> Path:
    """Test error at best validation against p_L, one line per (model, rule); constant depth dashed.

    ``runs`` are comparable runs (one training setup); a point averaging several seeds carries
    an error bar of one standard deviation, and the constant-depth band shows the same.
    """
    figure, axis = plt.subplots(figsize=FIGURE_SIZE)
    lines: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    constant: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        error = run.test_error_at_best_val()
        if error is None:
            continue
        if run.survival_rule == "none":
            constant[run.model].append(error)
        else:
            lines[(run.model, run.survival_rule)][run.final_survival_prob].append(error)
    for (model, rule), points in sorted(lines.items()):
        probs = sorted(points)
        means = [PERCENT * statistics.fmean(points[prob]) for prob in probs]
        spreads = [PERCENT * statistics.stdev(points[prob]) if len(points[prob]) > 1 else 0.0 for prob in probs]
        line = axis.errorbar(probs, means, yerr=spreads, fmt="o-", capsize=3, label=f"{model}, {rule}")
        if model in constant:
            mean = PERCENT * statistics.fmean(constant[model])
            color = line.lines[0].get_color()
            axis.axhline(mean, linestyle="--", color=color, label=f"{model}, constant depth ({len(constant[model])})")
            if len(constant[model]) > 1:
                spread = PERCENT * statistics.stdev(constant[model])
                axis.axhspan(mean - spread, mean + spread, color=color, alpha=0.1)
    axis.set(xlabel="p_L (final survival probability)", ylabel="test error at best validation (%)", title=title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)


@_literal_text
def depth_heat_map(runs: list[Run], title: str, path: Path) -> Path:
    """Test error (%) over network depth (blocks) x p_L, mean over seeds, values written in the cells."""
    cells: dict[tuple[str, float], list[float]] = defaultdict(list)
    depth = {}
    for run in runs:
        error = run.test_error_at_best_val()
        if error is not None:
            cells[(run.model, run.final_survival_prob)].append(error)
            depth[run.model] = len(run.survival_probs)
    models = sorted(depth, key=depth.get)
    probs = sorted({prob for _, prob in cells})
    grid = [
        [PERCENT * sum(cells[(m, p)]) / len(cells[(m, p)]) if cells.get((m, p)) else math.nan for p in probs]
        for m in models
    ]
    figure, axis = plt.subplots(figsize=FIGURE_SIZE)
    image = axis.imshow(grid, aspect="auto", cmap="viridis_r", origin="lower")
    for row, values in enumerate(grid):
        for column, value in enumerate(values):
            if not math.isnan(value):
                shade = "black" if image.norm(value) < 0.5 else "white"
                axis.text(column, row, f"{value:.1f}", ha="center", va="center", color=shade, fontsize=10)
    axis.set_xticks(range(len(probs)), [f"{prob:g}" for prob in probs])
    axis.set_yticks(range(len(models)), [f"{model} ({depth[model]} blocks)" for model in models])
    axis.set(xlabel="p_L (final survival probability)", ylabel="network", title=title)
    figure.colorbar(image, ax=axis, label="test error at best validation (%)")
    return _save(figure, path)


@_literal_text
def survival_profiles(runs: list[Run], path: Path) -> Path:
    """p_l against block index l for each distinct model and schedule."""
    figure, axis = plt.subplots(figsize=FIGURE_SIZE)
    seen = set()
    for run in sorted(runs, key=lambda run: (run.model, run.setting)):
        key = (run.model, run.setting)
        if key in seen or not run.survival_probs:
            continue
        seen.add(key)
        probs = run.survival_probs
        axis.plot(range(1, len(probs) + 1), probs, marker=".", label=f"{run.model}: {run.setting}")
    axis.set(xlabel="residual block l", ylabel="survival probability p_l", ylim=(0, 1.05), title="survival profiles")
    _integer_ticks(axis)
    axis.grid(alpha=0.3)
    if seen:
        axis.legend(fontsize=7)
    return _save(figure, path)


@_literal_text
def curves_with_bands(
    curves: dict[str, list[list[tuple[float, float]]]], xlabel: str, ylabel: str, title: str, path: Path
) -> Path:
    """One line per arm: the mean over its seeds' curves of (step, value), with a band of one standard error.

    The seeds of an arm are evaluated at the same steps; an arm of one seed has no band.
    """
    figure, axis = plt.subplots(figsize=(8.0, 4.5))
    for arm, seeds in curves.items():
        steps = [step for step, _ in seeds[0]]
        columns = list(zip(*([value for _, value in curve] for curve in seeds)))
        means = [statistics.fmean(column) for column in columns]
        errors = [statistics.stdev(column) / math.sqrt(len(column)) if len(column) > 1 else 0.0 for column in columns]
        label = f"{arm} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})"
        axis.plot(steps, means, marker="o", markersize=3, label=label)
        axis.fill_between(
            steps, [m - e for m, e in zip(means, errors)], [m + e for m, e in zip(means, errors)], alpha=0.2
        )
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axis.grid(alpha=0.3)
    axis.legend()
    return _save(figure, path)
