"""Validation error of trained runs: BatchNorm statistics as trained, and recalibrated with every block (results.md).

    python docs/scripts/recalibrated_validation.py RUN_FOLDER [RUN_FOLDER ...] [--checkpoint best|last]

In training, a stochastic network's BatchNorm layers average statistics over steps in which
some blocks were dropped (and, under the paper's scaling, the surviving branches unscaled);
evaluation runs every block, each scaled by p_l. This prints, per run, the validation error of
its checkpoint with the statistics it trained with, and with the statistics recomputed over its
training images by ``torch.optim.swa_utils.update_bn`` inside :func:`stochdepth.run_every_block`
(every block runs, combined as in evaluation). The data comes from the run's own settings and
is never downloaded; the test set is not touched.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from pathlib import Path

import torch
from torch.optim.swa_utils import update_bn

import stochdepth
from stochdepth.data import build_loaders
from stochdepth.train.api import load_trained_model
from stochdepth.train.trainer import error_rate

PERCENT = 100.0


def validation_error(model: torch.nn.Module, loader: object) -> float:
    return PERCENT * error_rate(model, loader, contextlib.nullcontext, False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    args = parser.parse_args()
    print("| run | step | mean p_l in force | val. error (%), statistics as trained | recalibrated, every block |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        try:
            model, config, _ = load_trained_model(run, args.checkpoint, "cpu")
            data = dataclasses.replace(config.data, download=False)
            loaders = build_loaders(data, config.optim.batch_size, torch.device("cpu"), config.run.seed)
        except ValueError as error:  # a missing or foreign run folder, a bad checkpoint, missing data: one line
            parser.error(str(error))
        gates = stochdepth.gate_generator(model)
        as_trained = validation_error(model, loaders.val)
        with stochdepth.run_every_block(model):
            update_bn(loaders.train, model)
        recalibrated = validation_error(model.eval(), loaders.val)
        mean_prob = sum(gates.probs_in_force) / len(gates.probs_in_force)
        print(f"| {run.name} | {gates.steps_taken:,} | {mean_prob:.3f} | {as_trained:.2f} | {recalibrated:.2f} |")


if __name__ == "__main__":
    main()
