"""Training-step time of stochastic depth against constant depth, measured side by side.

Variants, all built from the same model name and trained on the same random batch:
  constant      survival_rule="none" (the baseline)
  batch         linear decay to p_L, drop_mode="batch" (the paper: dropped branches do not run)
  sample        linear decay to p_L, drop_mode="sample" (branches run on surviving rows only)
  mask-multiply linear decay to p_L, every branch runs and is multiplied by a per-sample 0/1
                mask, as timm's DropPath and torchvision's StochasticDepth do (the reference)

The variants take turns step by step (round robin), so a slow patch of a noisy machine
hits them all alike; each variant's time is the median over its measured steps. Printed:
the step time, its ratio to constant depth, the activation memory saved for backward
(bytes of the tensors autograd keeps, counted with saved-tensor hooks, averaged over
steps) and, on CUDA, the peak allocated memory.

    python benchmarks/step_time.py --model resnet110 --batch-size 128 --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import stochdepth
from stochdepth.depth import ResidualBlock, StochasticResidual, replace_blocks


class MaskMultiplyResidual(ResidualBlock):
    """The reference: the branch always runs; a per-sample 0/1 mask multiplies it in training."""

    def __init__(self, block: ResidualBlock, survival_prob: float) -> None:
        super().__init__(block.branch, block.shortcut, block.pre_activation, block.post_activation)
        self.survival_prob = survival_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_activation(x)
        branch = self.branch(x)
        if self.training:
            mask_shape = (x.shape[0],) + (1,) * (x.dim() - 1)
            branch = branch * torch.empty(mask_shape, device=x.device, dtype=branch.dtype).bernoulli_(
                self.survival_prob
            )
        else:
            branch = branch * self.survival_prob
        return self.post_activation(self.shortcut(x) + branch)


def build_variants(model_name: str, final_survival_prob: float, in_channels: int) -> dict[str, nn.Module]:
    def make(**options: object) -> nn.Module:
        return stochdepth.create_model(model_name, in_channels=in_channels, gate_seed=0, **options)

    stochastic = {"final_survival_prob": final_survival_prob, "survival_rule": "linear"}
    mask_multiply = make(**stochastic)
    replace_blocks(mask_multiply, StochasticResidual, lambda _, block: MaskMultiplyResidual(block, block.survival_prob))
    return {
        "constant": make(survival_rule="none"),
        "batch": make(drop_mode="batch", **stochastic),
        "sample": make(drop_mode="sample", **stochastic),
        "mask-multiply": mask_multiply,
    }


def saved_activation_bytes(step: callable) -> int:
    """Bytes of the tensors autograd saves for backward during ``step()``."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet110")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--final-survival-prob", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=10, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps per variant")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, args.in_channels, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)
    variants = {
        name: model.to(device).train()
        for name, model in build_variants(args.model, args.final_survival_prob, args.in_channels).items()
    }
    optimizers = {}
    for name, model in variants.items():
        optimizers[name] = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
        stochdepth.fill_missing_grads_with_zeros(optimizers[name])

    def train_step(name: str) -> None:
        optimizers[name].zero_grad()
        nn.functional.cross_entropy(variants[name](images), labels).backward()
        optimizers[name].step()

    def timed_step(name: str) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_step(name)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        for name in variants:
            timed_step(name)
    times = {name: [] for name in variants}
    for _ in range(args.steps):
        for name in variants:
            times[name].append(timed_step(name))
    saved = {
        name: statistics.mean(saved_activation_bytes(lambda n=name: train_step(n)) for _ in range(5))
        for name in variants
    }
    peak = {}
    if device.type == "cuda":
        for name in variants:
            torch.cuda.reset_peak_memory_stats(device)
            train_step(name)
            peak[name] = torch.cuda.max_memory_allocated(device)

    print(
        f"model={args.model} batch={args.batch_size} image={args.image_size} p_L={args.final_survival_prob} "
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} steps={args.steps}"
    )
    baseline = statistics.median(times["constant"])
    header = "| variant | median step (ms) | ratio to constant | saved activations (MiB) |"
    rule = "|---|---|---|---|"
    if peak:
        header += " peak CUDA memory (MiB) |"
        rule += "---|"
    print(header)
    print(rule)
    for name in variants:
        median = statistics.median(times[name])
        row = f"| {name} | {median * 1e3:.1f} | {median / baseline:.3f} | {saved[name] / 2**20:.1f} |"
        if peak:
            row += f" {peak[name] / 2**20:.0f} |"
        print(row)


if __name__ == "__main__":
    main()
