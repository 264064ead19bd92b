"""Training-step time on the networks users already have: torchvision's ResNet-50 and a timm ViT.

Variants, side by side (round robin, step by step, median per variant):
  none          the network as its library builds it, no stochastic depth
  mask-multiply the library's own drop path at the same rates (timm's ``drop_path_rate``:
                every branch runs and is multiplied by a per-sample 0/1 mask). torchvision's
                ResNet has none, so ResNet-50's mask-multiply row is timm's resnet50, the
                same architecture
  batch, sample this project's real skipping (``stochdepth.stochastic_depth``), linear decay

Printed per variant: median step time, ratio to ``none``, the forward compute share
(training-mode FLOPs averaged over 20 steps, over ``none``'s), and saved activations (unique
storages) with their ratio. The target: real skipping's time ratio at most its compute share
plus 0.05, while the mask costs about 1.0.

    python benchmarks/external_step_time.py --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torchvision
from step_time import saved_activation_bytes
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import stochdepth


def resnet50_variants(drop_rate: float) -> dict[str, nn.Module]:
    def ours(mode: str) -> nn.Module:
        network = torchvision.models.resnet50(num_classes=10)
        return stochdepth.stochastic_depth(network, final_survival_prob=1 - drop_rate, drop_mode=mode)

    return {
        "none": torchvision.models.resnet50(num_classes=10),
        "mask-multiply": timm.create_model("resnet50", num_classes=10, drop_path_rate=drop_rate),
        "batch": ours("batch"),
        "sample": ours("sample"),
    }


def vit_variants(drop_rate: float, image_size: int) -> dict[str, nn.Module]:
    def vit(rate: float = 0.0) -> nn.Module:
        return timm.create_model(
            "vit_tiny_patch16_224", img_size=image_size, patch_size=8, num_classes=10, drop_path_rate=rate
        )

    return {
        "none": vit(),
        "mask-multiply": vit(drop_rate),
        "batch": stochdepth.stochastic_depth(vit(), final_survival_prob=1 - drop_rate, drop_mode="batch"),
        "sample": stochdepth.stochastic_depth(vit(), final_survival_prob=1 - drop_rate, drop_mode="sample"),
    }


def compute_share(network: nn.Module, baseline: float, images: torch.Tensor, passes: int = 20) -> float:
    total = 0.0
    with torch.no_grad():
        for _ in range(passes):
            with FlopCounterMode(display=False) as counter:
                network(images)
            total += counter.get_total_flops()
    return total / passes / baseline


def measure(title: str, variants: dict[str, nn.Module], images: torch.Tensor, args: argparse.Namespace) -> None:
    labels = torch.randint(0, 10, (len(images),))
    optimizers = {}
    for name, network in variants.items():
        network.train()
        optimizers[name] = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step(name: str) -> None:
        optimizers[name].zero_grad(set_to_none=False)
        nn.functional.cross_entropy(variants[name](images), labels).backward()
        optimizers[name].step()

    def timed(name: str) -> float:
        start = time.perf_counter()
        step(name)
        return time.perf_counter() - start

    for _ in range(args.warmup):
        for name in variants:
            timed(name)
    times = {name: [] for name in variants}
    for _ in range(args.steps):
        for name in variants:
            times[name].append(timed(name))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        variants["none"](images)
    baseline_flops = counter.get_total_flops()
    saved = {
        name: statistics.mean(saved_activation_bytes(variants[name], lambda n=name: step(n))[0] for _ in range(5))
        for name in variants
    }
    baseline = statistics.median(times["none"])
    print(f"\n{title}")
    print("| variant | median step (ms) | ratio to none | compute share | saved activations (MiB) | ratio |")
    print("|---|---|---|---|---|---|")
    for name, network in variants.items():
        median = statistics.median(times[name])
        share = compute_share(network, baseline_flops, images)
        print(
            f"| {name} | {median * 1e3:.0f} | {median / baseline:.3f} | {share:.3f} "
            f"| {saved[name] / 2**20:.0f} | {saved[name] / saved['none']:.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--resnet-batch", type=int, default=16)
    parser.add_argument("--resnet-image", type=int, default=64)
    parser.add_argument("--vit-batch", type=int, default=32)
    parser.add_argument("--vit-image", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"torch={torch.__version__} torchvision={torchvision.__version__} timm={timm.__version__} "
        f"threads={torch.get_num_threads()} steps={args.steps}"
    )
    resnet_images = torch.randn(args.resnet_batch, 3, args.resnet_image, args.resnet_image)
    measure(
        f"torchvision resnet50, batch {args.resnet_batch}, {args.resnet_image}x{args.resnet_image}, drop rate 0.5",
        resnet50_variants(0.5),
        resnet_images,
        args,
    )
    vit_images = torch.randn(args.vit_batch, 3, args.vit_image, args.vit_image)
    for rate in (0.1, 0.4):
        measure(
            f"timm ViT-Tiny (patch 8), batch {args.vit_batch}, {args.vit_image}x{args.vit_image}, drop rate {rate}",
            vit_variants(rate, args.vit_image),
            vit_images,
            args,
        )


if __name__ == "__main__":
    main()
