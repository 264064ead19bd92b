"""The training loop: SGD with the paper's schedule, evaluation, and the state a checkpoint holds.

Read it top to bottom: a :class:`Trainer` is built from a resolved
:class:`~stochdepth.config.TrainConfig` (``stochdepth.train.setup.resolve_config``) and runs
epochs of steps, evaluating and checkpointing as it goes. ``stochdepth.train.api`` builds
one for a new run or a resumed one. A resumed run ends with exactly the weights, losses and
errors of an uninterrupted one (timings aside): the checkpoint holds the model, optimizer,
counters (the learning rate follows from the iteration) and every random state (torch's,
the gates', the data order's and the augmentation's). On CPU this holds for the same torch build and thread count.

Under torchrun the same loop runs on every rank (``stochdepth.train.distributed`` says how
the work is split); rank 0 alone writes. A run resumed with as many ranks as it was
checkpointed with continues exactly; with another number it continues the same data
order, augmentation and gates, but not bit-exactly (BatchNorm sees other batches, dropout
other random streams).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stochdepth.config import TrainConfig
from stochdepth.data import Loaders, build_loaders
from stochdepth.depth import gate_generator, recalibrated_batchnorm
from stochdepth.models import check_weights
from stochdepth.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stochdepth.train.distributed import Ranks, SingleProcess
from stochdepth.train.gradients import GradientRecorder
from stochdepth.train.progress import Progress, percent, write_line
from stochdepth.train.run_folder import RunFolder
from stochdepth.train.run_state import Counters, RandomStates, Window, checked_amount
from stochdepth.train.schedule import learning_rate, set_learning_rate
from stochdepth.train.setup import build_model, resolve_device
from stochdepth.train.signals import TrainingStopped, stopped_by_signal

PROGRESS_EVERY = 20


class EvaluationStopped(Exception):
    """A signal arrived during an evaluation, which stopped after its current batch."""


def in_memory_format(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``images`` in channels-last memory format when the run asks for it (``run.channels_last``), else as they are."""
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def watched(
    loader: Any, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None
) -> Iterator[Any]:
    """``loader``'s batches; after each, ``progress`` ticks and ``should_stop`` is asked.

    When ``should_stop`` says so, :class:`EvaluationStopped` is raised (a signal is answered
    within one batch, not after the whole pass). ``progress`` is closed at the end.
    """
    for batch in loader:
        yield batch
        if progress is not None:
            progress.tick()
        if should_stop is not None and should_stop():
            raise EvaluationStopped
    if progress is not None:
        progress.close()


def error_counts(
    model: nn.Module,
    loader: Any,
    autocast: Any,
    channels_last: bool,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """(misclassified, images) in ``loader``, in evaluation mode (every block, scaled by p_l), on the device.

    The count of misclassified images stays on the device until the end (no synchronisation per batch).
    ``progress`` and ``should_stop`` as in :func:`watched`; the model's training flag is restored either way.
    """
    was_training = model.training
    model.eval()
    wrong = torch.zeros((), dtype=torch.long)
    total = 0
    try:
        with torch.no_grad():
            for images, labels in watched(loader, progress, should_stop):
                with autocast():
                    logits = model(in_memory_format(images, channels_last))
                wrong = wrong.to(labels.device) + (logits.argmax(dim=1) != labels).sum()
                total += len(labels)
    finally:
        model.train(was_training)
    return torch.stack([wrong, wrong.new_tensor(total)])


def error_rate(model: nn.Module, loader: Any, autocast: Any, channels_last: bool) -> float:
    """Fraction of misclassified images in ``loader`` (see :func:`error_counts`)."""
    wrong, total = error_counts(model, loader, autocast, channels_last).tolist()
    return wrong / total if total else math.nan


def check_runs_on(model: nn.Module, spec: Any, name: str, device: torch.device) -> None:
    """``model`` maps two images of ``spec``'s size to two rows of logits, or the run stops before it starts.

    A network built for larger images (GoogLeNet, Inception, DenseNet-121 on 28x28) fails here,
    in one line, rather than in the first training step with a folder left behind.
    """
    images = torch.zeros(2, spec.in_channels, spec.image_size, spec.image_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(images)
    except (RuntimeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{name} does not run on {spec.image_size}x{spec.image_size} images with {spec.in_channels} channel(s) "
            f"({first_line})"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, spec.num_classes):
        raise ValueError(f"{name} does not return one row of {spec.num_classes} logits per image")


class Trainer:
    """One training run: model, data, optimizer, schedule, counters and (optionally) its folder.

    ``ranks`` is this process's place in a data-parallel run (``stochdepth.train.distributed.join``);
    by default one process on ``config.run.device``. Only rank 0 passes a ``folder``.
    """

    def __init__(
        self,
        config: TrainConfig,
        folder: RunFolder | None = None,
        progress: bool = False,
        ranks: Ranks | None = None,
    ) -> None:
        self.config = config
        self.folder = folder
        self.progress = progress
        self.ranks = ranks = ranks if ranks is not None else SingleProcess(resolve_device(config.run.device))
        self.device = ranks.device
        seed = config.run.seed
        with ranks.all_through("at start"):
            ranks.local_batch(config.optim.batch_size)
            if not config.run.test_every_eval and (ranks.world_size > 1 or folder is None):
                raise ValueError(
                    "test_every_eval=False needs one process and a run folder (it tests checkpoints/best.pt at the end)"
                )
            if config.run.sync_batchnorm and self.device.type != "cuda":
                raise ValueError("run.sync_batchnorm needs CUDA (PyTorch's SyncBatchNorm does not run on the CPU)")
            torch.manual_seed(seed)
            self.loaders: Loaders = build_loaders(
                config.data, config.optim.batch_size, self.device, seed, ranks.shard, config.run.recalibrate_batchnorm
            )
            total_steps = config.optim.epochs * len(self.loaders.train)
            self.model = build_model(config, self.loaders.spec, seed, total_steps).to(self.device)
            check_runs_on(self.model, self.loaders.spec, config.model.model, self.device)
        ranks.seed_own_stream(seed)
        if config.run.sync_batchnorm:
            self.model = ranks.sync_batchnorm(self.model)
        if config.run.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if config.run.compile:
            self.model.compile()
        self.gates = gate_generator(self.model)
        self.network = ranks.wrap(self.model)
        self.gradient_recorder = GradientRecorder(self.model, self.gates)
        optim = config.optim
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=optim.lr,
            momentum=optim.momentum,
            dampening=0,
            nesterov=optim.momentum > 0,
            weight_decay=optim.weight_decay,
        )
        self.counters = Counters()
        self.window = Window.empty(self.device, optim.lr)
        self.random_states = RandomStates(self.device, ranks)
        self.stop_signal: str | None = None
        self.launcher = os.getppid() if ranks.world_size > 1 else None
        self.first_nonfinite = torch.full((), -1, dtype=torch.long, device=self.device)
        self.last_checkpoint_time = time.monotonic()

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.config.run.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # Checkpoints -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, and what rebuilding the network alone needs (config, data spec)."""
        random_states = {
            **self.random_states.state_dict(),
            "gates": self.gates.state_dict(),
            **self.loaders.state_dict(),
        }
        window = {**self.window.state_dict(), "branches_run": self.gates.branches_run}
        return {
            "model_name": self.config.model.model,
            "config": self.config.to_dict(),
            "data_spec": self.loaders.spec.as_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self.counters.state_dict(),
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
            check_weights(self.model, state["model"], self.config.model.model)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self._check_optimizer_settings()
            for param in self.model.parameters():
                buffer = self.optimizer.state.get(param, {}).get("momentum_buffer")
                if buffer is not None and (not isinstance(buffer, torch.Tensor) or buffer.shape != param.shape):
                    raise ValueError("a momentum buffer does not have its parameter's shape")
            random_states = state["random_states"]
            self.random_states.load_state_dict(random_states)
            self.gates.load_state_dict(random_states["gates"])
            self.loaders.load_state_dict(random_states)
            self.counters = Counters.from_state_dict(
                state, self.config.optim.epochs, len(self.loaders.train), random_states.get("data_position", 0)
            )
            window = Window.from_state_dict(state["window"], self.device, self.counters.iteration)
            self.gates.branches_run = checked_amount(state["window"]["branches_run"], "window.branches_run")
            self.window = window if self.ranks.is_main else window.without_sums()
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{source}: does not fit this run ({first_line})") from None

    def _check_optimizer_settings(self) -> None:
        """A loaded optimizer state must carry the run's own SGD settings (a checkpoint is untrusted input)."""
        optim = self.config.optim
        expected = {
            "momentum": optim.momentum,
            "dampening": 0,
            "nesterov": optim.momentum > 0,
            "weight_decay": optim.weight_decay,
            "maximize": False,
        }
        for group in self.optimizer.param_groups:
            for key, value in expected.items():
                given = group.get(key, value)
                if isinstance(given, bool) != isinstance(value, bool) or given != value:
                    raise ValueError(f"its optimizer has {key} {given!r} where the run has {value!r}")

    def save(self, which: str) -> None:
        """Write checkpoint ``which`` (every rank takes part; rank 0 writes)."""
        self.check_finite()
        self.window = self.window.gathered(self.ranks)
        state = self.state_dict()
        if self.folder is not None:
            save_checkpoint(state, self.folder.checkpoint(which))
        if which == "last":
            self.last_checkpoint_time = time.monotonic()

    # Training ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train until ``config.optim.epochs`` and return the summary.

        An evaluation a signal stopped (the checkpoint says so) is done first.
        """
        self.network.train()
        if self.counters.evaluation_owed:
            self.evaluate()
            self.save("last")
        while self.counters.epoch < self.config.optim.epochs:
            self.train_epoch()
        if not self.config.run.test_every_eval:
            self.test_best_weights()
        summary = self.summary()
        if self.folder is not None:
            self.folder.write_json(self.folder.summary, summary)
        return summary

    def train_epoch(self) -> None:
        """The rest of the current epoch (all of it unless resumed mid-epoch), then a checkpoint.

        After each step: evaluate if ``eval_every_iters`` says so, write ``last.pt`` if
        ``checkpoint_every_minutes`` have passed, and stop cleanly if a SIGTERM or SIGINT
        arrived. The last two (and a progress line) are the host's decisions: every rank
        takes them at the same step (:meth:`~stochdepth.train.distributed.ProcessGroup.agree`).
        """
        config = self.config
        eval_every = config.run.eval_every_iters
        steps_per_epoch = len(self.loaders.train)
        progress = Progress(
            steps_per_epoch,
            self.counters.iteration - self.counters.epoch * steps_per_epoch,
            f"epoch {self.counters.epoch + 1}/{config.optim.epochs}",
            bar=self.progress,
        )
        start = time.perf_counter()
        for images, labels in self.loaders.train:
            self.train_step(images, labels)
            progress.update()
            self._notice_a_lost_launcher()
            show_now, stop_now, checkpoint_due = self.ranks.agree(
                [
                    self.window.images > 0 and progress.wants_values(self.window.steps, PROGRESS_EVERY),
                    self.stop_signal is not None,
                    self._checkpoint_due(),
                ]
            )
            if show_now:
                self.show_progress(progress, start)
            evaluate_now = eval_every is not None and self.counters.iteration % eval_every == 0
            if evaluate_now or stop_now or checkpoint_due:
                self._close_segment(start)
                if evaluate_now:
                    self.evaluate()
                if stop_now or checkpoint_due:
                    self.save("last")
                self._stop_if_asked(progress, stop_now)
                start = time.perf_counter()
        progress.close()
        self._close_segment(start)
        self.counters.epoch += 1
        if eval_every is None or (self.window.steps > 0 and self.counters.epoch == config.optim.epochs):
            self.evaluate()
        self.save("last")
        self._stop_if_asked(progress, self.ranks.agree([self.stop_signal is not None])[0])

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """One SGD step; a non-finite loss or gradient stops the run or skips the step.

        Gradients stay allocated (``set_to_none=False``): no fresh allocation each step. A
        dropped block's parameters get a zero gradient from the mechanism, hence weight decay
        and momentum, as in the paper's code.
        """
        images = in_memory_format(images, self.config.run.channels_last)
        set_learning_rate(
            self.optimizer, learning_rate(self.counters.iteration, self.config.optim, len(self.loaders.train))
        )
        with self.autocast():
            logits = self.network(images)
            loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        self.counters.iteration += 1
        finite = self._finite(loss)
        if self.config.run.on_nonfinite == "skip":
            if self.ranks.agree([not finite.item()])[0]:
                self.optimizer.zero_grad(set_to_none=False)
                self.counters.skipped_steps += 1
                write_line(f"warning: non-finite loss or gradient at iteration {self.counters.iteration}; step skipped")
                return
        else:
            self.first_nonfinite.masked_fill_(~finite & (self.first_nonfinite < 0), self.counters.iteration)
        every = self.config.run.record_gradients_every
        if every is not None and self.counters.iteration % every == 0 and self.folder is not None:
            self.record_gradients()
        self.window.lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.window.add(loss.detach().float(), (logits.detach().argmax(dim=1) != labels).sum(), len(labels))

    def show_progress(self, progress: Progress, start: float) -> None:
        self.check_finite()
        loss_sum, wrong, images = self.window.totals(self.ranks)
        seconds = self.window.seconds + time.perf_counter() - start
        progress.show(loss=loss_sum / images, error=percent(wrong / images), img_s=f"{images / seconds:.0f}")

    def record_gradients(self) -> None:
        """Append this step's gradient magnitudes to ``gradients.jsonl`` (see ``train.gradients``)."""
        record = {
            "iteration": self.counters.iteration,
            "epoch": round(self.counters.iteration / len(self.loaders.train), 4),
            **self.gradient_recorder.measure(),
        }
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
        bad_iteration = self.ranks.maximum(int(self.first_nonfinite.item()))
        if bad_iteration < 0:
            return
        kept = "no checkpoint was written before it"
        if self.folder is not None and self.folder.checkpoint("last").is_file():
            kept = f"the last good checkpoint {self.folder.checkpoint('last')} is kept"
        raise TrainingStopped(
            f"non-finite loss or gradient at iteration {bad_iteration} "
            f"(noticed at iteration {self.counters.iteration}); "
            f"{kept}; lower optim.lr, or set run.on_nonfinite to skip to skip such steps",
            exit_code=3,
        )

    def _notice_a_lost_launcher(self) -> None:
        """A rank whose torchrun launcher died (it was re-parented) stops as on SIGHUP, with a checkpoint.

        Without this the ranks of a killed launcher would train on as orphans, writing to a
        run folder nobody watches.
        """
        if self.launcher is not None and self.stop_signal is None and os.getppid() != self.launcher:
            self.stop_signal = "SIGHUP"

    def _checkpoint_due(self) -> bool:
        minutes = self.config.run.checkpoint_every_minutes
        return minutes is not None and time.monotonic() - self.last_checkpoint_time >= 60 * minutes

    def _stop_if_asked(self, progress: Progress, asked: bool) -> None:
        """Stop the run if a signal asked for it (on this rank, or on another: ``asked``)."""
        if not asked:
            return
        progress.close()
        raise self._stopped()

    def _stop_asker(self, batches: int) -> Callable[[], bool]:
        """What an evaluation of ``batches`` batches asks after each batch: whether a signal asked to stop.

        The ranks decide together (a signal on one rank stops all at the same batch), for as many
        batches as every rank's shard has (shards may differ by a batch; one collective finds the
        shortest), so every rank asks the same number of times.
        """
        shared = -self.ranks.maximum(-batches)
        asked = 0

        def should_stop() -> bool:
            nonlocal asked
            asked += 1
            return asked <= shared and self.ranks.agree([self.stop_signal is not None])[0]

        return should_stop

    def _stopped(self) -> TrainingStopped:
        """What a run stopped by a signal ends with: where it stopped and how to resume."""
        where = "no run folder, so nothing was saved"
        if self.folder is not None:
            where = f"resume the run in {self.folder.path}"
        finished_epoch = self.counters.iteration == self.counters.epoch * len(self.loaders.train)
        when = f"after epoch {self.counters.epoch}" if finished_epoch else f"in epoch {self.counters.epoch + 1}"
        return stopped_by_signal(self.stop_signal or "SIGTERM", self.counters.iteration, when, where)

    def _close_segment(self, start: float) -> None:
        """Add the training time since ``start`` to the window and the run's total."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        self.window.seconds += seconds
        self.counters.train_seconds += seconds

    def evaluate(self) -> dict[str, Any]:
        """Validation and test error now; log one metrics record; keep the best by validation.

        With ``run.recalibrate_batchnorm``, the errors are measured, and ``best.pt`` written, with
        recalibrated BatchNorm statistics; training goes on with its own.
        """
        self.check_finite()
        self.ranks.broadcast_buffers(self.model)
        try:
            with self._evaluation_batchnorm():
                return self._evaluate()
        except EvaluationStopped:
            self.counters.evaluation_owed = True
            self.save("last")
            raise self._stopped() from None

    def _evaluation_batchnorm(self) -> contextlib.AbstractContextManager:
        """The model's BatchNorm statistics as trained, or recalibrated (``run.recalibrate_batchnorm``)."""
        loader = self.loaders.recalibration
        if loader is None:
            return contextlib.nullcontext()
        return recalibrated_batchnorm(self.model, self._recalibration_images(loader), self.autocast)

    def _recalibration_images(self, loader: Any) -> Iterator[torch.Tensor]:
        """``loader``'s images, with a progress line and a stop between batches when a signal asks."""
        progress = Progress(len(loader), 0, "recalibrating BatchNorm", bar=self.progress)
        for images, _ in watched(loader, progress, self._stop_asker(len(loader))):
            yield in_memory_format(images, self.config.run.channels_last)

    def _evaluate(self) -> dict[str, Any]:
        window = self.window
        val_error = self._error(self.loaders.val, "validation")
        test_error = self._error(self.loaders.test, "test") if self.config.run.test_every_eval else math.nan
        self.counters.evaluation_owed = False
        loss_sum, wrong, images = window.totals(self.ranks)
        steps_taken = self.gates.steps_taken
        record = {
            "epoch": round(self.counters.iteration / len(self.loaders.train), 4),
            "iteration": self.counters.iteration,
            "train_loss": loss_sum / max(images, 1),
            "train_error": wrong / max(images, 1),
            "val_error": val_error,
            "test_error": test_error,
            "lr": window.lr,
            "mean_active_blocks": self.gates.take_branches_run() / max(window.steps, 1),
            "expected_active_blocks": self.gates.expected_branches(steps_taken - window.steps, steps_taken),
            "epoch_seconds": window.seconds,
            "images_per_second": images / window.seconds if window.seconds > 0 else math.nan,
            "skipped_steps": self.counters.skipped_steps,
        }
        self.counters.evaluations += 1
        self.window = Window.empty(self.device, window.lr)
        self.counters.final = {"val_error": val_error, "test_error": test_error, "epoch": record["epoch"]}
        if self.folder is not None:
            self.folder.append(self.folder.metrics, record)
        if val_error < self.counters.best["val_error"]:
            self.counters.best = {"epoch": record["epoch"], "val_error": val_error, "test_error": test_error}
            self.save("best")
        write_line(self.describe(record))
        return record

    def test_best_weights(self) -> None:
        """The test error of ``checkpoints/best.pt``'s weights, measured once at the end (``test_every_eval=False``).

        The model keeps those weights afterwards; ``last.pt`` already holds the last ones.
        """
        if self.counters.best["epoch"] is None:
            return
        self.model.load_state_dict(load_checkpoint(self.folder.checkpoint("best"))["model"])
        best = self.counters.best
        try:
            best["test_error"] = self._error(self.loaders.test, "test")
        except EvaluationStopped:
            raise self._stopped() from None
        write_line(f"test error {percent(best['test_error'])} at the best validation epoch {best['epoch']:g}")

    def _error(self, loader: Any, name: str) -> float:
        """The error on ``loader``'s set: each rank counts its shard, the counts are summed."""
        progress = Progress(len(loader), 0, f"evaluating ({name} set)", bar=self.progress)
        counts = error_counts(
            self.model,
            loader,
            self.autocast,
            self.config.run.channels_last,
            progress,
            should_stop=self._stop_asker(len(loader)),
        )
        wrong, total = self.ranks.sum(counts).tolist()
        return wrong / total if total else math.nan

    def describe(self, record: dict[str, Any]) -> str:
        """One evaluation as a line: errors, learning rate, realised vs expected blocks, speed."""
        test = "" if math.isnan(record["test_error"]) else f"  test error {percent(record['test_error'])}"
        depth = ""
        if self.gates.depth_probs:
            depth = (
                f"  blocks run {record['mean_active_blocks']:.1f} (expected {record['expected_active_blocks']:.1f} "
                f"of {len(self.gates.depth_probs)})"
            )
        return (
            f"epoch {record['epoch']:g}/{self.config.optim.epochs}  iter {record['iteration']}  "
            f"loss {record['train_loss']:.4f}  train error {percent(record['train_error'])}  "
            f"val error {percent(record['val_error'])}{test}  lr {record['lr']:.4g}"
            f"{depth}  {record['images_per_second']:.0f} img/s{self.time_left()}"
        )

    def time_left(self) -> str:
        """``"  about 4 min of training left"`` at the run's mean training time per step so far ("" at the end)."""
        remaining = self.config.optim.epochs * len(self.loaders.train) - self.counters.iteration
        if remaining <= 0 or self.counters.iteration == 0 or self.counters.train_seconds <= 0:
            return ""
        seconds = remaining * self.counters.train_seconds / self.counters.iteration
        amount = f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{max(1, round(seconds / 60))} min"
        return f"  about {amount} of training left"

    def summary(self) -> dict[str, Any]:
        return {
            "best_epoch": self.counters.best["epoch"],
            "best_val_error": self.counters.best["val_error"] if self.counters.best["epoch"] is not None else None,
            "test_error_at_best_val": self.counters.best["test_error"]
            if self.counters.best["epoch"] is not None
            else None,
            "final_test_error": self.counters.final.get("test_error") if self.config.run.test_every_eval else None,
            "final_val_error": self.counters.final.get("val_error"),
            "train_seconds": self.counters.train_seconds,
            "epochs": self.counters.epoch,
            "iterations": self.counters.iteration,
        }
