"""Check eq. 5 on a trained run: test error with and without p_l scaling, and of sampled networks.

Three ways to evaluate a stochastic-depth network, on the first N test images:
  scaled        the library's evaluation: every block runs, its branch multiplied by p_l
  unscaled      every block runs at full strength (what eq. 5 corrects)
  monte-carlo   the mean softmax of K networks with blocks dropped as in training
                (BatchNorm in evaluation mode)

    python docs/scripts/eval_scaling.py RUN_DIR [--checkpoint best] [--images 2000] [--samples 20]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses

import torch

from stochdepth.data import build_loaders
from stochdepth.depth import stochastic_blocks
from stochdepth.train import load_trained_model
from stochdepth.train.trainer import error_rate


def monte_carlo_error(model: torch.nn.Module, loader, samples: int) -> float:
    model.eval()
    for block in stochastic_blocks(model):
        block.training = True
    wrong = total = 0
    with torch.no_grad():
        for images, labels in loader:
            probabilities = sum(torch.softmax(model(images), dim=1) for _ in range(samples))
            wrong += (probabilities.argmax(dim=1) != labels).sum().item()
            total += len(labels)
    model.eval()
    return wrong / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    model, config, _ = load_trained_model(args.run, args.checkpoint)
    data = dataclasses.replace(config.data, eval_size=args.images)
    test = build_loaders(data, 256, torch.device("cpu"), config.run.seed).test
    print(f"scaled       {error_rate(model, test, contextlib.nullcontext, False):.4f}")
    blocks = list(stochastic_blocks(model))
    probs = [block.survival_probs for block in blocks]
    for block in blocks:
        block.survival_probs = (1.0,) * len(block.survival_probs)
    print(f"unscaled     {error_rate(model, test, contextlib.nullcontext, False):.4f}")
    for block, prob in zip(blocks, probs, strict=True):
        block.survival_probs = prob
    print(f"monte-carlo  {monte_carlo_error(model, test, args.samples):.4f}")


if __name__ == "__main__":
    main()
