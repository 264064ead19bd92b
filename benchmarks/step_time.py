"""Training-step time of stochastic depth against constant depth, measured side by side.

Variants, all built from the same model name and trained on the same random batch:
  constant      survival_rule="none" (the baseline)
  batch         linear decay to p_L, drop_mode="batch" (the paper: dropped branches do not run)
  sample        linear decay to p_L, drop_mode="sample" (branches run on surviving rows only)
  subset        linear decay to p_L, drop_mode="subset" (each branch on a fixed round(p_l B) rows)
  mask-multiply linear decay to p_L, every branch runs and is multiplied by a per-sample 0/1
                mask, as timm's DropPath and torchvision's StochasticDepth do (the reference)

With ``--channels-last`` every variant is also timed in the channels-last memory format
(``<variant>+channels_last``, its input converted too), in the same rounds, so the two formats'
ratios come from one run.

The variants take turns step by step (round robin), so a slow patch of a noisy machine
hits them all alike; each variant's time is the median over its measured steps. Printed:
the step time, its ratio to constant depth, the activation memory autograd keeps for backward
(saved-tensor hooks; each storage counted once however many tensors view it, parameters
left out; averaged over steps), its ratio to constant depth and, on CUDA, the peak allocated
memory.

    python benchmarks/step_time.py --model resnet110 --batch-size 128 --steps 10
    python benchmarks/step_time.py --model timm/vit_small_patch16_224 --image-size 64 --batch-size 32
    python benchmarks/step_time.py --model resnet20 --in-channels 1 --image-size 28 --channels-last
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

import stochdepth
from stochdepth.depth import ResidualBlock, StochasticResidual, stochastic_blocks


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


def build_variants(
    model_name: str, final_survival_prob: float, in_channels: int, image_size: int
) -> dict[str, nn.Module]:
    """The five variants; for ``timm/<name>`` the mask-multiply row is timm's own drop path at rate 1 - p_L."""

    def make(**options: object) -> nn.Module:
        return stochdepth.create_model(
            model_name, in_channels=in_channels, image_size=image_size, gate_seed=0, **options
        )

    stochastic = {"final_survival_prob": final_survival_prob, "survival_rule": "linear"}
    if model_name.startswith("timm/"):
        import timm

        size = {"img_size": image_size} if "vit" in model_name or "swin" in model_name else {}
        mask_multiply = timm.create_model(
            model_name.split("/", 1)[1], in_chans=in_channels, drop_path_rate=1 - final_survival_prob, **size
        )
    else:
        mask_multiply = make(**stochastic)
    for parent in list(mask_multiply.modules()):
        for name, child in parent.named_children():
            if isinstance(child, StochasticResidual):
                setattr(parent, name, MaskMultiplyResidual(child, child.survival_prob))
    return {
        "constant": make(survival_rule="none"),
        "batch": make(drop_mode="batch", **stochastic),
        "sample": make(drop_mode="sample", **stochastic),
        "subset": make(drop_mode="subset", **stochastic),
        "mask-multiply": mask_multiply,
    }


def saved_activation_bytes(model: nn.Module, step: callable) -> tuple[int, list[int]]:
    """Bytes of the storages autograd keeps for backward during ``step()``, each once, parameters left out.

    Also returns, per stochastic residual module (a block; a transformer block holds two
    branches), the bytes first kept while that module ran.
    """
    parameters = {param.untyped_storage().data_ptr() for param in model.parameters()}
    storages: dict[int, tuple[int, int | None]] = {}
    blocks = list(stochastic_blocks(model))
    running: list[int | None] = [None]

    def leave(module: nn.Module, args: object, output: object) -> None:
        running.pop()

    hooks = [block.register_forward_hook(leave) for block in blocks] + [
        block.register_forward_pre_hook(lambda module, args, index=index: running.append(index))
        for index, block in enumerate(blocks)
    ]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters and storage.data_ptr() not in storages:
            storages[storage.data_ptr()] = (storage.nbytes(), running[-1])
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    for hook in hooks:
        hook.remove()
    per_block = [0] * len(blocks)
    for size, block in storages.values():
        if block is not None:
            per_block[block] += size
    return sum(size for size, _ in storages.values()), per_block


def memory_floor(constant_total: int, constant_per_block: list[int], probs: list[float]) -> float:
    """The saved-activation share if each dropped block kept nothing and each running one what it keeps at
    constant depth: (everything outside the blocks + sum of p_l * block l's bytes) / constant total.

    ``probs`` holds one p_l per block: for a two-branch block, the mean of its branches' (the
    linear schedule gives them p_l that differ by (1 - p_L) / L)."""
    outside = constant_total - sum(constant_per_block)
    return (outside + sum(prob * size for prob, size in zip(probs, constant_per_block))) / constant_total


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
    parser.add_argument("--channels-last", action="store_true", help="also time every variant in channels-last")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, args.in_channels, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)
    variants = {
        name: model.to(device).train()
        for name, model in build_variants(
            args.model, args.final_survival_prob, args.in_channels, args.image_size
        ).items()
    }
    if args.channels_last:
        for name in list(variants):
            variants[f"{name}+channels_last"] = copy.deepcopy(variants[name]).to(memory_format=torch.channels_last)
    channels_last_images = images.contiguous(memory_format=torch.channels_last)
    optimizers = {}
    for name, model in variants.items():
        optimizers[name] = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)

    def train_step(name: str) -> None:
        optimizers[name].zero_grad(set_to_none=False)
        inputs = channels_last_images if name.endswith("+channels_last") else images
        nn.functional.cross_entropy(variants[name](inputs), labels).backward()
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
        name: statistics.mean(
            saved_activation_bytes(variants[name], lambda n=name: train_step(n))[0] for _ in range(20)
        )
        for name in variants
    }
    constant_total, constant_per_block = saved_activation_bytes(variants["constant"], lambda: train_step("constant"))
    block_probs = [statistics.mean(block.survival_probs) for block in stochastic_blocks(variants["batch"])]
    floor = memory_floor(constant_total, constant_per_block, block_probs)
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
    print(
        f"memory floor (each dropped block keeping nothing): {floor:.3f} of constant depth; "
        f"compute share (mean p_l): {statistics.mean(stochdepth.survival_probs(variants['batch'])):.3f}"
    )
    baseline = statistics.median(times["constant"])
    header = "| variant | median step (ms) | ratio to constant | saved activations (MiB) | ratio to constant |"
    rule = "|---|---|---|---|---|"
    if peak:
        header += " peak CUDA memory (MiB) |"
        rule += "---|"
    print(header)
    print(rule)
    for name in variants:
        median = statistics.median(times[name])
        memory = f"{saved[name] / 2**20:.1f} | {saved[name] / saved['constant']:.3f}"
        row = f"| {name} | {median * 1e3:.1f} | {median / baseline:.3f} | {memory} |"
        if peak:
            row += f" {peak[name] / 2**20:.0f} |"
        print(row)


if __name__ == "__main__":
    main()
