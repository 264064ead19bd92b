"""Training throughput on a GPU: stochastic vs constant depth, numerics and compilation, against a reference loop.

Every variant trains the same network (default ResNet-110) on 32x32 images through this
library's input pipeline (uint8 images on the device, batched augmentation): constant depth
and stochastic depth (linear to p_L = 0.5, batch mode), each in fp32, bf16 (autocast),
bf16 + channels-last, and bf16 + channels-last + ``torch.compile`` of the block branches. Also
measured: the input pipeline alone, and a reference loop written the way most CIFAR
repositories train (a ``DataLoader`` with per-image torchvision transforms in worker
processes, fp32, constant depth). Printed: images per second, the ratio to the same
configuration at constant depth, and peak GPU memory. Timing uses CUDA events after
warm-up steps (which include compilation).

    python benchmarks/gpu_throughput.py --model resnet110 --batch-size 128 --steps 60
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

import stochdepth
from stochdepth.data.device_loader import DeviceLoader

CONFIGS = {
    "fp32": {"bf16": False, "channels_last": False, "compile": False},
    "bf16": {"bf16": True, "channels_last": False, "compile": False},
    "bf16+cl": {"bf16": True, "channels_last": True, "compile": False},
    "bf16+cl+compile": {"bf16": True, "channels_last": True, "compile": True},
}


def synthetic_images(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return images, torch.randint(0, 10, (count,), generator=generator)


def endless(loader: DeviceLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of epoch after epoch."""
    while True:
        yield from loader


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, run: callable) -> float:
    """Seconds ``run()`` takes, by CUDA events on a GPU."""
    if device.type != "cuda":
        start = time.perf_counter()
        run()
        return time.perf_counter() - start
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    run()
    end.record()
    torch.cuda.synchronize(device)
    return begin.elapsed_time(end) / 1e3


def throughput(device: torch.device, steps: Callable[[int], None], args: argparse.Namespace) -> tuple[float, float]:
    """Images per second of ``steps(args.steps)`` after ``steps(args.warmup)``, and peak GPU memory (MiB)."""
    steps(args.warmup)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(device, lambda: steps(args.steps))
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return args.steps * args.batch_size / seconds, peak


def library_loop(args: argparse.Namespace, rule: str, config: dict, loader: DeviceLoader) -> tuple[float, float]:
    """Images per second and peak memory (MiB) of this library's training step in ``config``."""
    device = torch.device(args.device)
    model = stochdepth.create_model(args.model, survival_rule=rule, final_survival_prob=0.5).to(device).train()
    if config["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    if config["compile"]:
        model.compile()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if config["bf16"] else contextlib.nullcontext

    batches = endless(loader)

    def steps(count: int) -> None:
        for _ in range(count):
            images, labels = next(batches)
            if config["channels_last"]:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast():
                loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            optimizer.step()

    return throughput(device, steps, args)


class PerImageDataset(torch.utils.data.Dataset):
    """CIFAR-style: each image a PIL image through RandomCrop(32, 4), flip, ToTensor, Normalize."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        from torchvision import transforms

        self.images = images.permute(0, 2, 3, 1).numpy()
        self.labels = labels.tolist()
        self.transform = transforms.Compose(
            [
                transforms.ToPILImage(),
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), self.labels[index]


def reference_loop(args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """The common CIFAR training loop: DataLoader with per-image transforms, fp32, constant depth."""
    device = torch.device(args.device)
    model = stochdepth.create_model(args.model, survival_rule="none").to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(
        PerImageDataset(images, labels),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=args.workers > 0,
    )

    def steps(count: int) -> None:
        for index, (batch, target) in enumerate(loader):
            if index == count:
                break
            batch, target = batch.to(device, non_blocking=True), target.to(device, non_blocking=True)
            loss = nn.functional.cross_entropy(model(batch), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return throughput(device, steps, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet110")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=15, help="untimed steps first (compilation included)")
    parser.add_argument("--images", type=int, default=50_000, help="synthetic training images")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the reference loop")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    images, labels = synthetic_images(args.images, torch.Generator().manual_seed(0))
    mean, std = torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])
    loader = DeviceLoader(
        images, labels, args.batch_size, mean, std, device, shuffle=True, max_translation=4, horizontal_flip=True
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"model={args.model} batch={args.batch_size} steps={args.steps} device={name} torch={torch.__version__}")

    batches = endless(loader)

    def pipeline() -> None:
        for _ in range(args.steps):
            next(batches)

    pipeline()
    print(f"input pipeline alone: {args.steps * args.batch_size / timed(device, pipeline):.0f} images/s")
    reference, reference_peak = reference_loop(args, images, labels)
    print("| configuration | depth | images/s | stochastic / constant time | vs reference loop | peak memory (MiB) |")
    print("|---|---|---|---|---|---|")
    print(f"| reference loop (DataLoader, fp32) | constant | {reference:.0f} | | 1.00 | {reference_peak:.0f} |")
    for config_name in args.configs:
        speeds = {}
        for rule in ("none", "linear"):
            speed, peak = library_loop(args, rule, CONFIGS[config_name], loader)
            speeds[rule] = speed
            ratio = f"{speeds['none'] / speed:.3f}" if rule == "linear" else ""
            depth = "constant" if rule == "none" else "stochastic"
            print(f"| {config_name} | {depth} | {speed:.0f} | {ratio} | {speed / reference:.2f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
