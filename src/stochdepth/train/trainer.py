"""The training loop: SGD with the paper's schedule, evaluation, run folders and exact resume.

Read it top to bottom: :func:`train` builds a :class:`Trainer` from a
:class:`~stochdepth.config.TrainConfig` and runs it; :func:`resume` rebuilds one from a
run folder and its last checkpoint. A resumed run ends with exactly the weights,
losses and errors of an uninterrupted one (timings aside): the checkpoint holds the
model, optimizer, schedule, counters and every random state (torch's, the gates', the
data order's and the augmentation's). On CPU this holds for the same torch build and
thread count (PyTorch's CPU kernels are deterministic at a fixed thread count).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import stochdepth
from stochdepth.analysis.gradients import GradientRecorder
from stochdepth.config import TrainConfig
from stochdepth.data import Loaders, build_loaders
from stochdepth.depth import (
    fill_missing_grads_with_zeros,
    gate_generator,
    stochastic_blocks,
    survival_probs,
)
from stochdepth.models import create_model
from stochdepth.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stochdepth.train.run_folder import RunFolder
from stochdepth.train.schedule import EpochSchedule

PROGRESS_EVERY = 20


def resolve_device(name: str | None) -> torch.device:
    """``name``, or CUDA when there is one, else the CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but this machine has no usable CUDA device")
    return device


def build_model(config: TrainConfig, num_classes: int, in_channels: int, gate_seed: int = 0) -> nn.Module:
    """The network ``config.model`` describes, for data of ``num_classes`` and ``in_channels``."""
    return create_model(
        config.model.model,
        num_classes=num_classes,
        in_channels=in_channels,
        survival_rule=config.model.survival_rule,
        final_survival_prob=config.model.final_survival_prob,
        drop_mode=config.model.drop_mode,
        dropout_rate=config.model.dropout_rate,
        gate_seed=gate_seed,
    )


def error_rate(model: nn.Module, loader: Any, autocast: Any, channels_last: bool) -> float:
    """Fraction of misclassified images in ``loader``, in evaluation mode (every block, scaled by p_l)."""
    was_training = model.training
    model.eval()
    wrong = torch.zeros((), dtype=torch.long)
    total = 0
    with torch.no_grad():
        for images, labels in loader:
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast():
                logits = model(images)
            wrong = wrong.to(labels.device) + (logits.argmax(dim=1) != labels).sum()
            total += len(labels)
    model.train(was_training)
    return wrong.item() / total if total else math.nan


@dataclass
class Window:
    """Running sums of the training steps since the last evaluation.

    The sums stay on the device and are read only when evaluating (or for the progress
    bar every ``PROGRESS_EVERY`` steps), so a training step never waits for the host.
    """

    loss_sum: torch.Tensor
    wrong: torch.Tensor
    images: int
    steps: int
    seconds: float
    lr: float

    @classmethod
    def empty(cls, device: torch.device, lr: float) -> Window:
        zero = torch.zeros((), device=device)
        return cls(zero.clone(), zero.clone().long(), 0, 0, 0.0, lr)

    def add(self, mean_loss: torch.Tensor, wrong: torch.Tensor, images: int) -> None:
        self.loss_sum += mean_loss * images
        self.wrong += wrong
        self.images += images
        self.steps += 1


class TrainingStopped(Exception):
    """Training stopped before its end on purpose; the message says why and how to go on."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """While training, SIGTERM and SIGINT finish the current step, checkpoint and stop.

    A second SIGINT (Ctrl-C twice) interrupts at once. Outside the main thread (where
    Python cannot take signals) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signal_number: int, frame: object) -> None:
        if trainer.stop_signal is not None and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_signal = signal.Signals(signal_number).name

    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class Trainer:
    """One training run: model, data, optimizer, schedule, counters and (optionally) its folder."""

    def __init__(self, config: TrainConfig, folder: RunFolder | None = None, progress: bool | None = None) -> None:
        config.check()
        self.config = config
        self.folder = folder
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.device = resolve_device(config.run.device)
        seed = config.run.seed
        torch.manual_seed(seed)
        self.loaders: Loaders = build_loaders(config.data, config.optim.batch_size, self.device, seed)
        self.model = build_model(config, self.loaders.num_classes, self.loaders.in_channels, gate_seed=seed)
        self.model.to(self.device)
        if config.run.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if config.run.compile:
            for block in stochastic_blocks(self.model):
                block.branch.compile()
        self.gates = gate_generator(self.model)
        self.gradient_recorder = GradientRecorder(self.model)
        self.expected_active_blocks = sum(survival_probs(self.model))
        optim = config.optim
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=optim.lr,
            momentum=optim.momentum,
            dampening=0,
            nesterov=optim.momentum > 0,
            weight_decay=optim.weight_decay,
        )
        fill_missing_grads_with_zeros(self.optimizer)
        self.scheduler = EpochSchedule(self.optimizer, optim)
        self.epoch = 0
        self.iteration = 0
        self.evaluations = 0
        self.train_seconds = 0.0
        self.best = {"epoch": None, "val_error": math.inf, "test_error": math.nan}
        self.final: dict[str, float] = {}
        self.window = Window.empty(self.device, optim.lr)
        self.skipped_steps = 0
        self.stop_signal: str | None = None
        self.first_nonfinite = torch.full((), -1, dtype=torch.long, device=self.device)
        self.last_checkpoint_time = time.monotonic()

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.config.run.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def resolved_config(self) -> dict[str, Any]:
        """The configuration with the family's defaults filled in, the versions and the device."""
        values = self.config.to_dict()
        values["model"].update(getattr(self.model, "depth_options", {}))
        values["run"]["device"] = str(self.device)
        values["environment"] = {
            "stochdepth": stochdepth.__version__,
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
        }
        values["survival_probs"] = survival_probs(self.model)
        values["data_shape"] = {
            "num_classes": self.loaders.num_classes,
            "in_channels": self.loaders.in_channels,
            "image_size": self.loaders.image_size,
        }
        return values

    # Checkpoints -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        random_states = {"torch": torch.get_rng_state(), "gates": self.gates.state_dict(), **self.loaders.state_dict()}
        window = {**vars(self.window), "branches_run": self.gates.branches_run}
        if self.device.type == "cuda":
            random_states["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model_name": self.config.model.model,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "iteration": self.iteration,
            "evaluations": self.evaluations,
            "skipped_steps": self.skipped_steps,
            "train_seconds": self.train_seconds,
            "best": dict(self.best),
            "final": dict(self.final),
            "window": window,
            "random_states": random_states,
        }

    def load_state_dict(self, state: dict[str, Any], source: Path) -> None:
        if state.get("model_name") != self.config.model.model:
            raise CheckpointError(
                f"{source}: checkpoint is for model {state.get('model_name')!r}, "
                f"but the run is {self.config.model.model!r}"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            random_states = state["random_states"]
            torch.set_rng_state(random_states["torch"])
            if "cuda" in random_states and self.device.type == "cuda":
                torch.cuda.set_rng_state(random_states["cuda"], self.device)
            self.gates.load_state_dict(random_states["gates"])
            self.loaders.load_state_dict(random_states)
            self.epoch = int(state["epoch"])
            self.iteration = int(state["iteration"])
            self.evaluations = int(state["evaluations"])
            self.skipped_steps = int(state.get("skipped_steps", 0))
            self.train_seconds = float(state["train_seconds"])
            self.best = dict(state["best"])
            self.final = dict(state["final"])
            window = dict(state["window"])
            self.gates.branches_run = float(window.pop("branches_run"))
            self.window = Window(**window)
            self.window.loss_sum = self.window.loss_sum.to(self.device)
            self.window.wrong = self.window.wrong.to(self.device)
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{source}: does not fit this run ({first_line})") from None

    def save(self, which: str) -> None:
        self.check_finite()
        if self.folder is not None:
            save_checkpoint(self.state_dict(), self.folder.checkpoint(which))
        if which == "last":
            self.last_checkpoint_time = time.monotonic()

    # Training ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train until ``config.optim.epochs`` and return the summary."""
        self.model.train()
        while self.epoch < self.config.optim.epochs:
            self.train_epoch()
        summary = self.summary()
        if self.folder is not None:
            self.folder.write_json(self.folder.summary, summary)
        return summary

    def train_epoch(self) -> None:
        """The rest of the current epoch (all of it unless resumed mid-epoch), then a checkpoint.

        After each step: evaluate if ``eval_every_iters`` says so, write ``last.pt`` if
        ``checkpoint_every_minutes`` have passed, and stop cleanly if a SIGTERM or SIGINT
        arrived.
        """
        config = self.config
        eval_every = config.run.eval_every_iters
        steps_per_epoch = len(self.loaders.train)
        bar = tqdm(
            total=steps_per_epoch,
            initial=self.iteration - self.epoch * steps_per_epoch,
            desc=f"epoch {self.epoch + 1}/{config.optim.epochs}",
            unit="batch",
            disable=not self.progress,
            leave=False,
            dynamic_ncols=True,
        )
        start = time.perf_counter()
        for images, labels in self.loaders.train:
            self.train_step(images, labels)
            bar.update()
            window = self.window
            if self.progress and window.steps % PROGRESS_EVERY == 0 and window.images:
                self.check_finite()
                seconds = window.seconds + time.perf_counter() - start
                bar.set_postfix(
                    loss=f"{window.loss_sum.item() / window.images:.3f}",
                    err=f"{window.wrong.item() / window.images:.3f}",
                    img_s=f"{window.images / seconds:.0f}",
                )
            evaluate_now = eval_every is not None and self.iteration % eval_every == 0
            checkpoint_now = self.stop_signal is not None or self._checkpoint_due()
            if evaluate_now or checkpoint_now:
                self._close_segment(start)
                if evaluate_now:
                    self.evaluate()
                if checkpoint_now:
                    self.save("last")
                if self.stop_signal is not None:
                    bar.close()
                    raise self._stopped_by_signal()
                start = time.perf_counter()
        bar.close()
        self._close_segment(start)
        self.epoch += 1
        self.scheduler.step()
        if eval_every is None or (self.window.steps > 0 and self.epoch == config.optim.epochs):
            self.evaluate()
        self.save("last")

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """One SGD step; a non-finite loss or gradient stops the run or skips the step."""
        if self.config.run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.iteration += 1
        finite = self._finite(loss)
        if self.config.run.on_nonfinite == "skip":
            if not finite.item():
                self.optimizer.zero_grad(set_to_none=True)
                self.skipped_steps += 1
                tqdm.write(f"warning: non-finite loss or gradient at iteration {self.iteration}; step skipped")
                return
        else:
            self.first_nonfinite.masked_fill_(~finite & (self.first_nonfinite < 0), self.iteration)
        every = self.config.run.record_gradients_every
        if every is not None and self.iteration % every == 0:
            self.record_gradients()
        self.window.lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.window.add(loss.detach().float(), (logits.detach().argmax(dim=1) != labels).sum(), len(labels))

    def record_gradients(self) -> None:
        """Append this step's gradient magnitudes to ``gradients.jsonl`` (see ``analysis.gradients``)."""
        record = {
            "iteration": self.iteration,
            "epoch": round(self.iteration / len(self.loaders.train), 4),
            **self.gradient_recorder.measure(),
        }
        if self.folder is not None:
            self.folder.append(self.folder.gradients, record)

    def _finite(self, loss: torch.Tensor) -> torch.Tensor:
        """Whether the loss and every gradient are finite, as a tensor on the device (no synchronisation)."""
        grads = [param.grad for param in self.model.parameters() if param.grad is not None]
        total_norm = getattr(torch.nn.utils, "get_total_norm", None)
        if total_norm is not None:
            norm = total_norm(grads)
        else:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), math.inf)
        return torch.isfinite(loss.detach()) & torch.isfinite(norm)

    def check_finite(self) -> None:
        """Stop if any step since the start had a non-finite loss or gradient (``on_nonfinite="stop"``).

        Steps only note the first bad iteration on the device; this reads it, so it runs
        before anything is written (checkpoints, metrics) and never saves a bad state.
        """
        bad_iteration = int(self.first_nonfinite.item())
        if bad_iteration >= 0:
            raise self._stopped_by_nonfinite(bad_iteration)

    def _checkpoint_due(self) -> bool:
        minutes = self.config.run.checkpoint_every_minutes
        return minutes is not None and time.monotonic() - self.last_checkpoint_time >= 60 * minutes

    def _where_to_resume(self) -> str:
        if self.folder is None:
            return "no run folder, so nothing was saved"
        return f"resume with: stochdepth train --resume {self.folder.path}"

    def _stopped_by_signal(self) -> TrainingStopped:
        signal_number = signal.Signals[self.stop_signal]
        return TrainingStopped(
            f"stopped by {self.stop_signal} after iteration {self.iteration} (epoch {self.epoch + 1}); "
            f"checkpoint written; {self._where_to_resume()}",
            exit_code=128 + int(signal_number),
        )

    def _stopped_by_nonfinite(self, bad_iteration: int) -> TrainingStopped:
        kept = "no checkpoint was written before it"
        if self.folder is not None and self.folder.checkpoint("last").is_file():
            kept = f"the last good checkpoint {self.folder.checkpoint('last')} is kept"
        return TrainingStopped(
            f"non-finite loss or gradient at iteration {bad_iteration} (noticed at iteration {self.iteration}); "
            f"{kept}; "
            "lower --lr, or pass --on-nonfinite skip to skip such steps",
            exit_code=3,
        )

    def _close_segment(self, start: float) -> None:
        """Add the training time since ``start`` to the window and the run's total."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        self.window.seconds += seconds
        self.train_seconds += seconds

    def evaluate(self) -> dict[str, Any]:
        """Validation and test error now; log one metrics record; keep the best by validation."""
        self.check_finite()
        window = self.window
        channels_last = self.config.run.channels_last
        val_error = error_rate(self.model, self.loaders.val, self.autocast, channels_last)
        test_error = error_rate(self.model, self.loaders.test, self.autocast, channels_last)
        images = max(window.images, 1)
        record = {
            "epoch": round(self.iteration / len(self.loaders.train), 4),
            "iteration": self.iteration,
            "train_loss": window.loss_sum.item() / images,
            "train_error": window.wrong.item() / images,
            "val_error": val_error,
            "test_error": test_error,
            "lr": window.lr,
            "mean_active_blocks": self.gates.take_branches_run() / max(window.steps, 1),
            "expected_active_blocks": self.expected_active_blocks,
            "epoch_seconds": window.seconds,
            "images_per_second": window.images / window.seconds if window.seconds > 0 else math.nan,
            "skipped_steps": self.skipped_steps,
        }
        self.evaluations += 1
        self.window = Window.empty(self.device, window.lr)
        self.final = {"val_error": val_error, "test_error": test_error, "epoch": record["epoch"]}
        if self.folder is not None:
            self.folder.append(self.folder.metrics, record)
        if val_error < self.best["val_error"]:
            self.best = {"epoch": record["epoch"], "val_error": val_error, "test_error": test_error}
            self.save("best")
        self._print(record)
        return record

    def _print(self, record: dict[str, Any]) -> None:
        depth = ""
        if self.expected_active_blocks:
            depth = f"  blocks {record['mean_active_blocks']:.1f}/{self.expected_active_blocks:.1f}"
        tqdm.write(
            f"epoch {record['epoch']:g}/{self.config.optim.epochs}  iter {record['iteration']}  "
            f"loss {record['train_loss']:.4f}  train err {record['train_error']:.4f}  "
            f"val err {record['val_error']:.4f}  test err {record['test_error']:.4f}  lr {record['lr']:.4g}"
            f"{depth}  {record['images_per_second']:.0f} img/s",
            file=sys.stdout,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best["epoch"],
            "best_val_error": self.best["val_error"] if self.best["epoch"] is not None else None,
            "test_error_at_best_val": self.best["test_error"] if self.best["epoch"] is not None else None,
            "final_test_error": self.final.get("test_error"),
            "final_val_error": self.final.get("val_error"),
            "train_seconds": self.train_seconds,
            "epochs": self.epoch,
            "iterations": self.iteration,
        }


def train(config: TrainConfig, out: str | Path | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Train from ``config`` and return the summary (the Python API behind ``stochdepth train``).

    ``out`` (default ``config.run.out``) is the run folder; it must not exist or be empty.
    Without one, nothing is written.
    """
    out = out if out is not None else config.run.out
    if out is None:
        trainer = Trainer(config, None, progress)
        with stop_on_signals(trainer):
            return trainer.run()
    folder = RunFolder(out)
    folder.create()
    with folder.lock():
        trainer = Trainer(config.override(out=str(folder.path)), folder, progress)
        folder.write_json(folder.config, trainer.resolved_config())
        with stop_on_signals(trainer):
            return trainer.run()


def resume(run_dir: str | Path, epochs: int | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last checkpoint; ``epochs`` extends (re-plans) it.

    With ``epochs`` the schedule's milestones are re-planned for the new length, from the
    epoch the run has reached; the new length is written to ``config.json``.
    """
    folder = RunFolder(run_dir)
    config, values = folder.read_config()
    with folder.lock():
        state = load_checkpoint(folder.checkpoint("last"))
        if epochs is not None:
            config = config.override(epochs=epochs)
        trainer = Trainer(config, folder, progress)
        trainer.load_state_dict(state, folder.checkpoint("last"))
        folder.keep_records(trainer.evaluations, trainer.iteration)
        if epochs is not None:
            values["optim"]["epochs"] = epochs
            folder.write_json(folder.config, values)
        with stop_on_signals(trainer):
            return trainer.run()


def load_trained_model(
    run_dir: str | Path, checkpoint: str = "best", device: str | None = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a saved run with the weights of ``checkpoint``, and the run's ``config.json``."""
    folder = RunFolder(run_dir)
    config, values = folder.read_config()
    path = folder.checkpoint(checkpoint)
    state = load_checkpoint(path)
    shape = values.get("data_shape")
    if not isinstance(shape, dict) or not {"num_classes", "in_channels", "image_size"} <= set(shape):
        raise CheckpointError(f"{folder.config}: has no valid data_shape (num_classes, in_channels, image_size)")
    model = build_model(config, shape["num_classes"], shape["in_channels"])
    if state.get("model_name") != config.model.model:
        raise CheckpointError(
            f"{path}: checkpoint is for model {state.get('model_name')!r}, not {config.model.model!r}"
        )
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(f"{path}: weights do not fit {config.model.model} ({type(error).__name__})") from None
    return model.to(resolve_device(device)).eval(), values
