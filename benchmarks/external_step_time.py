"""Training-step time on the networks users already have: torchvision's ResNet-50 and timm's
ConvNeXt-Tiny, Swin-T, EfficientNet-B0 and ViT-S at the drop rates they train with.

Variants, side by side (round robin, step by step, median per variant):
  none          the network as its library builds it, no stochastic depth
  mask-multiply the library's own drop path at the rate (timm's ``drop_path_rate``: every
                branch runs and is multiplied by a per-sample 0/1 mask). torchvision's
                ResNet has none, so ResNet-50's mask-multiply row is timm's resnet50, the
                same architecture
  batch, sample this project's real skipping: ``stochdepth.stochastic_depth`` of the
                mask-multiply network, which takes its drop-path rates over as the schedule
                (ResNet-50: linear decay to 1 - rate)

Printed per variant: median step time and its ratio to ``none``; the same for forward plus
backward alone (the optimizer step, over every parameter whatever was dropped, is a fixed
cost that grows in share as inputs shrink); the forward compute share (training-mode FLOPs
averaged over 20 steps, over ``none``'s); saved activations (unique storages) with their
ratio. The target: real skipping's time ratio at most its compute share plus 0.05, while the
mask costs about 1.0.

    python benchmarks/external_step_time.py --steps 10
    python benchmarks/external_step_time.py --steps 10 --only vit_small   # one family
    python benchmarks/external_step_time.py --steps 10 --only torchvision/  # torchvision's families
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


TIMM_FAMILIES = (
    ("convnext_tiny", 0.1, {}),
    ("convnext_tiny", 0.4, {}),
    ("swin_tiny_patch4_window7_224", 0.2, {"img_size": "image", "window_size": 4}),
    ("efficientnet_b0", 0.2, {}),
    ("vit_small_patch16_224", 0.1, {"img_size": "image", "patch_size": 8}),
    ("vit_small_patch16_224", 0.4, {"img_size": "image", "patch_size": 8}),
)
"""timm name, drop_path_rate, options (``"image"``: the measured image size); small inputs for a CPU."""


TORCHVISION_FAMILIES = (("convnext_tiny", 0.1), ("swin_t", 0.2), ("efficientnet_b0", 0.2))
"""torchvision name and the ``stochastic_depth_prob`` its builder fixes (its default)."""


def torchvision_variants(name: str, drop_rate: float) -> dict[str, nn.Module]:
    """The builder's network with its own rate, and the same with every ``StochasticDepth`` at 0 ("none")."""

    def build() -> nn.Module:
        network = torchvision.models.get_model(name, weights=None, num_classes=10)
        rates = {module.p for module in network.modules() if isinstance(module, torchvision.ops.StochasticDepth)}
        assert max(rates) <= drop_rate, f"{name}'s own rates {sorted(rates)} exceed {drop_rate}"
        return network

    plain = build()
    for module in plain.modules():
        if isinstance(module, torchvision.ops.StochasticDepth):
            module.p = 0.0
    return {
        "none": plain,
        "mask-multiply": build(),
        "batch": stochdepth.stochastic_depth(build(), drop_mode="batch"),
        "sample": stochdepth.stochastic_depth(build(), drop_mode="sample"),
    }


def timm_variants(name: str, drop_rate: float, options: dict[str, object], image_size: int) -> dict[str, nn.Module]:
    sized = {key: image_size if value == "image" else value for key, value in options.items()}

    def build(rate: float) -> nn.Module:
        return timm.create_model(name, num_classes=10, drop_path_rate=rate, **sized)

    return {
        "none": build(0.0),
        "mask-multiply": build(drop_rate),
        "batch": stochdepth.stochastic_depth(build(drop_rate), drop_mode="batch"),
        "sample": stochdepth.stochastic_depth(build(drop_rate), drop_mode="sample"),
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

    def timed(name: str) -> tuple[float, float]:
        """(whole step, forward and backward) seconds."""
        start = time.perf_counter()
        optimizers[name].zero_grad(set_to_none=False)
        nn.functional.cross_entropy(variants[name](images), labels).backward()
        middle = time.perf_counter()
        optimizers[name].step()
        return time.perf_counter() - start, middle - start

    for _ in range(args.warmup):
        for name in variants:
            timed(name)
    times = {name: [] for name in variants}
    passes = {name: [] for name in variants}
    for _ in range(args.steps):
        for name in variants:
            whole, forward_backward = timed(name)
            times[name].append(whole)
            passes[name].append(forward_backward)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        variants["none"](images)
    baseline_flops = counter.get_total_flops()
    saved = {
        name: statistics.mean(saved_activation_bytes(variants[name], lambda n=name: step(n))[0] for _ in range(5))
        for name in variants
    }
    baseline = statistics.median(times["none"])
    baseline_passes = statistics.median(passes["none"])
    mean_prob = statistics.fmean(stochdepth.survival_probs(variants["batch"]))
    print(f"\n{title} (the schedule's mean p_l, its expected share of the branches run: {mean_prob:.3f})")
    print(
        "| variant | median step (ms) | ratio to none | forward+backward (ms) | ratio to none | compute share "
        "| saved activations (MiB) | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, network in variants.items():
        median, median_passes = statistics.median(times[name]), statistics.median(passes[name])
        share = compute_share(network, baseline_flops, images)
        print(
            f"| {name} | {median * 1e3:.0f} | {median / baseline:.3f} | {median_passes * 1e3:.0f} "
            f"| {median_passes / baseline_passes:.3f} | {share:.3f} "
            f"| {saved[name] / 2**20:.0f} | {saved[name] / saved['none']:.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image", type=int, default=64)
    parser.add_argument("--only", default="", help="measure the networks whose name contains this")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"torch={torch.__version__} torchvision={torchvision.__version__} timm={timm.__version__} "
        f"threads={torch.get_num_threads()} steps={args.steps}"
    )
    images = torch.randn(args.batch, 3, args.image, args.image)
    size = f"batch {args.batch}, {args.image}x{args.image}"
    if args.only in "resnet50":
        measure(f"torchvision resnet50, {size}, drop rate 0.5", resnet50_variants(0.5), images, args)
    for name, rate in TORCHVISION_FAMILIES:
        if args.only in f"torchvision/{name}":
            measure(f"torchvision {name}, {size}, drop rate {rate}", torchvision_variants(name, rate), images, args)
    for name, rate, options in TIMM_FAMILIES:
        if args.only in name:
            extra = "".join(f", {key}={value}" for key, value in options.items() if value != "image")
            measure(
                f"timm {name}{extra}, {size}, drop rate {rate}",
                timm_variants(name, rate, options, args.image),
                images,
                args,
            )


if __name__ == "__main__":
    main()
