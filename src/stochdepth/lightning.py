"""Lightning: a callback that keeps the gate state in Lightning's checkpoints and logs the realised depth.

A converted network's gate sequence (which blocks each step drops, and the step count a
time schedule reads) lives in its gate generator, outside the model's ``state_dict``. Without
this callback, a Lightning run resumed from its checkpoint would draw the gates from the start
again and end with other weights than an uninterrupted run::

    from stochdepth.lightning import StochasticDepthCallback

    trainer = lightning.Trainer(callbacks=[StochasticDepthCallback()])

Needs ``lightning`` (``pip install lightning``); the rest of stochdepth does not.
"""

from __future__ import annotations

from typing import Any

import lightning

from stochdepth.depth import gate_generator

CHECKPOINT_KEY = "stochdepth_gates"


class StochasticDepthCallback(lightning.Callback):
    """Saves and restores the gate state of the converted network in the LightningModule; logs blocks run.

    ``log_depth``: after every training batch, log ``stochdepth/branches_run``, the residual
    branches that ran in it (a sample- or subset-mode branch counts the share of the batch it
    ran on), next to ``stochdepth/branches_expected`` from the schedule.
    """

    def __init__(self, log_depth: bool = True) -> None:
        self.log_depth = log_depth

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
