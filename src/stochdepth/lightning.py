"""Lightning: a callback that keeps the gate state in Lightning's checkpoints and logs the realised depth.

A converted network's gate sequence (which blocks each step drops, and the step count a
time schedule reads) lives in its gate generator, outside the model's ``state_dict``. Without
this callback, a Lightning run resumed from its checkpoint would draw the gates from the start
again and end with other weights than an uninterrupted run::

    from stochdepth.lightning import StochasticDepthCallback

    trainer = lightning.Trainer(callbacks=[StochasticDepthCallback()])

With ``recalibration_batches`` (e.g. a DataLoader of training images without augmentation) it
also runs every validation with BatchNorm statistics recomputed over them, every block running
(:func:`stochdepth.recalibrated_batchnorm`), and puts the training statistics back when
validation ends, so training and the checkpoints Lightning writes are as without.

Needs ``lightning`` (``pip install lightning``); the rest of stochdepth does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import lightning
import torch

from stochdepth.depth import gate_generator, recalibrated_batchnorm

CHECKPOINT_KEY = "stochdepth_gates"


class StochasticDepthCallback(lightning.Callback):
    """Saves and restores the gate state of the converted network in the LightningModule; logs blocks run.

    ``log_depth``: after every training batch, log ``stochdepth/branches_run``, the residual
    branches that ran in it (a sample- or subset-mode branch counts the share of the batch it
    ran on), next to ``stochdepth/branches_expected`` from the schedule.
    ``recalibration_batches``: validate with BatchNorm statistics recomputed over these batches
    (each a tensor of images, or a tuple or list whose first element is; moved to the module's
    device), run through the LightningModule's ``forward``; read at every validation, so a
    DataLoader or a list, not a one-pass generator. Under DDP give every process the same batches.
    """

    def __init__(self, log_depth: bool = True, recalibration_batches: Iterable[Any] | None = None) -> None:
        self.log_depth = log_depth
        self.recalibration_batches = recalibration_batches
        self._recalibrated = contextlib.ExitStack()

    def on_validation_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if self.recalibration_batches is not None:
            images = _images_on(self.recalibration_batches, pl_module.device)
            self._recalibrated.enter_context(recalibrated_batchnorm(pl_module, images))

    def on_validation_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        self._recalibrated.close()

    def on_exception(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, exception: BaseException
    ) -> None:
        self._recalibrated.close()

    def on_save_checkpoint(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CHECKPOINT_KEY] = gate_generator(pl_module).state_dict()

    def on_load_checkpoint(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if CHECKPOINT_KEY not in checkpoint:
            raise ValueError(
                "this Lightning checkpoint has no stochdepth gate state (it was saved without StochasticDepthCallback)"
            )
        gate_generator(pl_module).load_state_dict(checkpoint[CHECKPOINT_KEY])

    def on_train_batch_end(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        if not self.log_depth:
            return
        gates = gate_generator(pl_module)
        pl_module.log("stochdepth/branches_run", gates.take_branches_run(), on_step=True, on_epoch=False)
        pl_module.log("stochdepth/branches_expected", sum(gates.probs_in_force), on_step=True)


def _images_on(batches: Iterable[Any], device: torch.device) -> Iterator[torch.Tensor]:
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
        if not isinstance(images, torch.Tensor):
            raise TypeError(
                "recalibration_batches must yield image tensors, or tuples or lists whose first element is one; "
                f"got {type(batch).__name__}"
            )
        yield images.to(device)
