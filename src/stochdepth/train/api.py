"""The public face of training: start a run, resume one, load a trained network.

``stochdepth train`` and ``stochdepth.train.train`` are the same thing; so are
``--resume`` and :func:`resume`, and ``eval``/``export`` and :func:`load_trained_model`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import stochdepth
from stochdepth.config import TrainConfig
from stochdepth.data import DataSpec
from stochdepth.depth import gate_generator, survival_probs
from stochdepth.models import check_weights
from stochdepth.train.checkpoint import CheckpointError, load_checkpoint
from stochdepth.train.distributed import Ranks, join
from stochdepth.train.progress import write_line
from stochdepth.train.run_folder import RunFolder, RunFolderError
from stochdepth.train.run_state import Counters
from stochdepth.train.setup import build_model, load_initial_weights, resolve_config, resolve_device
from stochdepth.train.signals import stop_on_signals, terminate_cleanly
from stochdepth.train.trainer import Trainer


def _progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


def run_description(trainer: Trainer) -> dict[str, Any]:
    """``config.json``: the resolved configuration, the versions, the device, every p_l and the data spec."""
    values: dict[str, Any] = trainer.config.to_dict()
    values["run"]["device"] = str(trainer.device)
    values["environment"] = {
        "stochdepth": stochdepth.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "processes": trainer.ranks.world_size,
    }
    values["survival_probs"] = survival_probs(trainer.model)
    values["data_spec"] = trainer.loaders.spec.as_dict()
    return values


@dataclass
class Plan:
    """What rank 0 decided about the run folder, handed to every rank: the configuration and where to start."""

    config: TrainConfig
    state: dict[str, Any] | None = None
    source: Path | None = None
    write_config: bool = True


def train(
    config: TrainConfig, out: str | Path | None = None, progress: bool | None = None, resume_existing: bool = False
) -> dict[str, Any]:
    """Train from ``config`` and return the summary (the Python API behind ``stochdepth train``).

    ``out`` (default ``config.run.out``) is the run folder; it must not hold a run, unless
    ``resume_existing`` (``--auto-resume``): then a folder that already holds this run is
    resumed, to ``config``'s epochs. Options, model and data are checked before anything is
    written; a failed start leaves no folder behind. Without ``out``, nothing is written.
    Under torchrun every rank calls this; rank 0 alone touches the folder.
    """
    out = out if out is not None else config.run.out
    config = resolve_config(config)
    ranks = join(config.run.device)
    if out is None:
        return _carry_out(Plan(config), None, progress, ranks)
    folder = RunFolder(out)
    config = config.override(out=str(folder.path))
    with contextlib.ExitStack() as held:
        held.enter_context(terminate_cleanly())

        def plan() -> Plan:
            held.enter_context(folder.claim())
            if folder.config.exists() and resume_existing:
                _refuse_contradictions(config, folder)
                return _resume_plan(folder, config.optim.epochs)
            folder.prepare_new_run()
            return Plan(config)

        return _carry_out(ranks.from_main(plan), folder, progress, ranks)


def resume(run_dir: str | Path, epochs: int | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last checkpoint; ``epochs`` extends (re-plans) it.

    With ``epochs`` the schedule's milestones are re-planned for the new length, from the
    epoch the run has reached; the new length is written to ``config.json``. Fewer epochs
    than the run has done is refused. A run killed before its first checkpoint starts again
    from the beginning (``config.json`` is all it needs), dropping records no checkpoint covers.
    Under torchrun every rank reads ``config.json`` (for the device); rank 0 alone the rest.
    """
    folder = RunFolder(run_dir)
    ranks = join(folder.read_config()[0].run.device)
    with contextlib.ExitStack() as held:
        held.enter_context(terminate_cleanly())

        def plan() -> Plan:
            held.enter_context(folder.claim())
            return _resume_plan(folder, epochs)

        return _carry_out(ranks.from_main(plan), folder, progress, ranks)


def _refuse_contradictions(given: TrainConfig, folder: RunFolder) -> None:
    """``--auto-resume`` continues the run in the folder; options that say otherwise (other than epochs) are refused."""
    recorded = folder.read_config()[0].override(epochs=given.optim.epochs, out=given.run.out).to_dict()
    wanted = given.to_dict()
    differing = [
        f"{section}.{key} ({recorded[section][key]!r} in the run, {value!r} given)"
        for section, values in wanted.items()
        for key, value in values.items()
        if recorded[section].get(key) != value
    ]
    if differing:
        raise RunFolderError(
            f"{folder.path} holds a run with other options: {', '.join(differing)}; resume it with its own options "
            "or train into another folder"
        )


MAY_DIFFER_ON_RESUME = {
    ("run", "out"),
    ("run", "device"),
    ("data", "data_dir"),
    ("data", "download"),
    ("data", "workers"),
}
"""What a resumed run's ``config.json`` may say differently from its checkpoint: where it runs, and from where
its data comes (the folder may have moved to another machine). The epochs may differ when the resume extends the
run; everything else is what the checkpoint was trained with."""


def _refuse_edits(config: TrainConfig, recorded: object, source: Path, extending: bool) -> None:
    """``config.json`` and the checkpoint must describe the same run: a field edited in either is one line.

    A checkpoint of format 1 holds no configuration: there is nothing to compare.
    """
    if recorded is None:
        return
    if not isinstance(recorded, dict):
        raise RunFolderError(f"{source}: holds no run configuration; nothing was changed")
    wanted = config.to_dict()
    allowed = MAY_DIFFER_ON_RESUME | ({("optim", "epochs")} if extending else set())
    differing = [
        f"{section}.{key} ({value!r} in config.json, {recorded.get(section, {}).get(key)!r} in the checkpoint)"
        for section, values in wanted.items()
        for key, value in values.items()
        if (section, key) not in allowed
        and isinstance(recorded.get(section), dict)
        and _recorded_value(recorded[section].get(key)) != _recorded_value(value)
    ]
    missing = [section for section in wanted if not isinstance(recorded.get(section), dict)]
    if missing:
        raise RunFolderError(f"{source}: its configuration lacks {', '.join(missing)}; nothing was changed")
    if differing:
        raise RunFolderError(
            f"{source.parent.parent / 'config.json'} and {source} disagree on {', '.join(differing)}: one was edited; "
            "nothing was changed (put the value back, or train a new run)"
        )


def _recorded_value(value: object) -> object:
    """A configuration value as JSON and a checkpoint both hold it (tuples and lists alike)."""
    return list(value) if isinstance(value, tuple) else value


def _resume_plan(folder: RunFolder, epochs: int | None) -> Plan:
    """Where a run folder holding a run goes on from: its last checkpoint, or the start if it has none.

    Everything is checked before anything is changed. A run killed (or out of disk) between
    writing its first ``best.pt`` and its ``last.pt`` goes on from ``best.pt``, which holds the
    whole training state of its moment (records after it are dropped). A finished run
    (``summary.json``) without ``last.pt`` is refused rather than restarted over its results;
    one killed before its first checkpoint starts again.
    """
    config, values = folder.read_config()
    if epochs is not None:
        config = resolve_config(config.override(epochs=epochs))
    last = folder.checkpoint("last")
    if folder.checkpoints.exists() and (folder.checkpoints.is_symlink() or not folder.checkpoints.is_dir()):
        raise RunFolderError(f"{folder.checkpoints} is not a folder; nothing was changed")
    if last.exists() and (last.is_symlink() or not last.is_file()):
        raise RunFolderError(f"{last} is not a regular file; nothing was changed")
    best = folder.checkpoint("best")
    if not last.is_file() and folder.summary.exists():
        raise RunFolderError(
            f"{folder.path} has finished (summary.json present) but has no checkpoints/last.pt to resume from; "
            "nothing was changed (move the folder aside to start it again)"
        )
    if not last.is_file() and (best.is_symlink() or not best.is_file()):
        if best.exists():
            raise RunFolderError(f"{best} is not a regular file; nothing was changed")
        folder.keep_records(0, 0)
        folder.checkpoints.mkdir(exist_ok=True)
        return Plan(config)
    last = last if last.is_file() else best
    state = load_checkpoint(last)
    _refuse_edits(config, state.get("config"), last, epochs is not None)
    done = state.get("epoch")
    if epochs is not None and isinstance(done, int) and epochs < done:
        raise RunFolderError(
            f"{folder.path} has done {done} epochs; optim.epochs must be at least {done}, got {epochs}"
        )
    return Plan(config, state, last, write_config=epochs is not None or "data_spec" not in values)


def _carry_out(plan: Plan, folder: RunFolder | None, progress: bool | None, ranks: Ranks) -> dict[str, Any]:
    """Build the trainer on every rank, start it from ``plan``, record the start (rank 0) and train."""
    trainer = Trainer(plan.config, folder if ranks.is_main else None, _progress(progress), ranks)
    with ranks.all_through("loading the starting weights"):
        if plan.state is not None:
            trainer.load_state_dict(plan.state, plan.source)
            write_line(_resume_line(plan.source, trainer.counters, plan.config.optim.epochs))
        elif plan.config.model.init_weights is not None:
            write_line(load_initial_weights(trainer.model, plan.config.model.init_weights))
    if folder is not None:
        ranks.from_main(lambda: _record_start(folder, trainer, plan))
    with stop_on_signals(trainer):
        return trainer.run()


def _resume_line(source: Path, counters: Counters, epochs: int) -> str:
    """What a resume says it does: where it goes on from, or that the run has no epoch left to train."""
    if counters.epoch >= epochs:
        return f"{source}: the run has trained all its {epochs} epochs; nothing left to train"
    return f"resuming {source} at epoch {counters.epoch + 1} of {epochs}, iteration {counters.iteration}"


def _record_start(folder: RunFolder, trainer: Trainer, plan: Plan) -> None:
    if plan.state is not None:
        folder.keep_records(trainer.counters.evaluations, trainer.counters.iteration)
    if plan.write_config:
        folder.write_json(folder.config, run_description(trainer))


def checkpoint_path(source: str | Path, checkpoint: str = "best") -> Path:
    """The checkpoint ``source`` names: a ``.pt`` file itself, or a run folder's ``checkpoints/<checkpoint>.pt``."""
    source = Path(source)
    if not source.exists():
        raise ValueError(f"{source}: no such run folder or checkpoint file")
    return source if source.is_file() else RunFolder(source).checkpoint(checkpoint)


def load_trained_model(
    source: str | Path, checkpoint: str = "best", device: str | None = "cpu"
) -> tuple[nn.Module, TrainConfig, DataSpec]:
    """The network saved in ``source`` (a run folder or a checkpoint file), its configuration and data spec.

    A checkpoint carries its run's resolved configuration and data spec, so the file alone
    rebuilds its network; nothing else is read. The network is in evaluation mode.
    """
    path = checkpoint_path(source, checkpoint)
    state = load_checkpoint(path)
    try:
        config = resolve_config(TrainConfig.from_dict(state["config"]))
        spec = DataSpec.from_dict(state["data_spec"])
    except KeyError as error:
        raise CheckpointError(
            f"{path}: has no {error.args[0]!r}; it was written by an older stochdepth (resume the run once to "
            "rewrite its checkpoints)"
        ) from None
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: does not describe a usable run ({error})") from None
    expected = RunFolder(source).read_config()[0].model.model if Path(source).is_dir() else config.model.model
    if state.get("model_name") != expected or config.model.model != expected:
        names = {state.get("model_name"), config.model.model} - {expected}
        raise CheckpointError(f"{path}: checkpoint is for model {', '.join(map(repr, names))}, not {expected!r}")
    try:
        gate_state = state["random_states"]["gates"]
        model = build_model(config, spec, total_steps=gate_state.get("total_steps"))
        gate_generator(model).load_state_dict(gate_state)
    except (KeyError, RuntimeError, TypeError, AttributeError, ValueError) as error:
        raise CheckpointError(f"{path}: its gate state does not fit its configuration ({error})") from None
    try:
        check_weights(model, state["model"], config.model.model)
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, TypeError, AttributeError, ValueError) as error:
        raise CheckpointError(f"{path}: {error if isinstance(error, ValueError) else type(error).__name__}") from None
    return model.to(resolve_device(device)).eval(), config, spec


def evaluate_test_set(
    source: str | Path,
    checkpoint: str = "best",
    device: str | None = None,
    data_dir: str | None = None,
    progress: bool = False,
    recalibrate_batchnorm: int | None = None,
) -> tuple[int, int, str]:
    """(misclassified, images, data set) on the whole test set, for a trained run folder or checkpoint.

    The data comes from ``data_dir`` (else ``$STOCHDEPTH_DATA``, else ``./data``), never from
    the run's own settings (a run folder from elsewhere names folders of its machine), and is
    never downloaded. A data set that does not fit the network is a ``ValueError``.
    ``recalibrate_batchnorm``: evaluate with BatchNorm statistics recomputed over the first that
    many training images of the run's split (as ``--recalibrate-batchnorm`` does in training);
    nothing is written back.
    """
    import contextlib

    from stochdepth.config import TrainConfig
    from stochdepth.data import build_loaders
    from stochdepth.depth import recalibrated_batchnorm
    from stochdepth.train.progress import Progress
    from stochdepth.train.trainer import error_counts

    TrainConfig().override(recalibrate_batchnorm=recalibrate_batchnorm).check()
    model, config, spec = load_trained_model(source, checkpoint, device)
    data = dataclasses.replace(config.data, data_dir=data_dir, download=False, eval_size=None)
    model_device = next(model.parameters()).device
    loaders = build_loaders(
        data, config.optim.batch_size, model_device, config.run.seed, recalibration_size=recalibrate_batchnorm
    )
    if (loaders.spec.num_classes, loaders.spec.in_channels) != (spec.num_classes, spec.in_channels):
        raise ValueError(
            f"the data found ({loaders.spec.num_classes} classes, {loaders.spec.in_channels} channels) does not "
            f"fit the network ({spec.num_classes} classes, {spec.in_channels} channels)"
        )
    statistics = contextlib.nullcontext()
    if loaders.recalibration is not None:
        statistics = recalibrated_batchnorm(model, (images for images, _ in loaders.recalibration))
    bar = Progress(len(loaders.test), 0, "evaluating (test set)", bar=progress)
    with statistics:
        wrong, total = error_counts(model, loaders.test, contextlib.nullcontext, False, bar).tolist()
    return wrong, total, config.data.dataset
