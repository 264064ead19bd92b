"""Sweeps (the paper's Fig. 8): a grid of ordinary runs under one folder, restartable.

``run_sweep`` trains every point of the grid as a normal run folder in ``<out>/runs/<name>``
with a readable name (``resnet56-linear-p0.5-seed1``). Started again, it skips finished runs,
resumes interrupted ones from their last checkpoint and leaves alone runs that another
process is training right now (their lock is held), so a stopped sweep only does what is
left and several processes can share one sweep.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stochdepth.config import SWEEP_OPTIONS, TrainConfig
from stochdepth.files import write_text_atomically
from stochdepth.train import train
from stochdepth.train.run_folder import RunFolder, RunFolderBusy
from stochdepth.train.setup import resolve_config


@dataclass
class SweepPoint:
    """One run of a sweep: its folder name and configuration."""

    name: str
    config: TrainConfig


def run_name(config: TrainConfig) -> str:
    """A readable, stable folder name from a resolved config: model, rule, p_L (unless constant), mode, scaling, seed.

    The mode and the scaling appear only where they differ from the paper's (batch, paper).
    """
    model = config.model
    parts = [_path_safe(model.model), model.survival_rule]
    if model.survival_rule != "none":
        parts.append(f"p{model.final_survival_prob:g}")
    if model.drop_mode != "batch":
        parts.append(model.drop_mode)
    if model.scaling == "inverted" and model.survival_rule != "none":
        parts.append("inverted")
    parts.append(f"seed{config.run.seed}")
    return "-".join(parts)


def _path_safe(text: str) -> str:
    """``text`` as one path component: anything but letters, digits, ``_``, ``.``, ``-`` becomes ``_``, no ``..``."""
    return re.sub(r"\.\.+", "_", re.sub(r"[^A-Za-z0-9_.\-]", "_", text)).lstrip(".") or "_"


def sweep_grid(base: TrainConfig, grid: dict[str, list[Any]]) -> list[SweepPoint]:
    """Every combination of ``grid``'s values applied to ``base``, resolved; identical runs appear once.

    Constant-depth points (and every point of a network without residual blocks) resolve to
    p_L = 1, so they appear once whatever p_L values the grid lists.
    """
    unknown = sorted(set(grid) - set(SWEEP_OPTIONS))
    if unknown:
        raise ValueError(f"cannot sweep {', '.join(unknown)}; sweepable options: {', '.join(SWEEP_OPTIONS)}")
    names = [name for name in SWEEP_OPTIONS if grid.get(name)]
    points: dict[str, SweepPoint] = {}
    for values in itertools.product(*(grid[name] for name in names)):
        config = resolve_config(base.override(**dict(zip(names, values, strict=True))))
        points.setdefault(run_name(config), SweepPoint(run_name(config), config))
    return list(points.values())


def run_sweep(
    base: TrainConfig, grid: dict[str, list[Any]], out: str | Path, progress: bool | None = None
) -> dict[str, str]:
    """Train what is left of the sweep in ``out``; returns each run's name and what was done with it."""
    out = Path(out)
    points = sweep_grid(base, grid)
    manifest = {"base": base.to_dict(), "grid": grid, "runs": [point.name for point in points]}
    if (out / "runs").is_symlink() or (out / "sweep.json").is_symlink():
        raise ValueError(f"{out} holds a symbolic link (runs/ or sweep.json); a sweep never writes through one")
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
        write_text_atomically(out / "sweep.json", json.dumps(manifest, indent=2) + "\n")
    except OSError as error:
        raise ValueError(f"cannot write the sweep into {out}: {error.strerror or error}") from None
    done: dict[str, str] = {}
    runs = (out / "runs").resolve()
    for index, point in enumerate(points, 1):
        path = (runs / point.name).resolve()
        if path.parent != runs:
            raise ValueError(f"run {point.name!r} would be written outside {runs}")
        folder = RunFolder(path)
        print(f"[{index}/{len(points)}] {point.name}", flush=True)
        done[point.name] = _advance(point, folder, progress)
    return done


def _advance(point: SweepPoint, folder: RunFolder, progress: bool | None) -> str:
    """Bring one run to its end: 'finished' (already), 'running elsewhere', 'resumed' or 'trained'.

    The folder's lock is taken before anything in it is created or changed, so several
    processes can share a sweep.
    """
    if folder.summary.is_file() and not folder.is_locked():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if json.loads(folder.summary.read_text()).get("epochs") == point.config.optim.epochs:
                return "finished"
    existed = folder.config.is_file()
    try:
        train(point.config, out=folder.path, progress=progress, resume_existing=True)
    except RunFolderBusy:
        return "running elsewhere"
    return "resumed" if existed else "trained"
