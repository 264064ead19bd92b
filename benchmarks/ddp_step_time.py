"""DDP training-step time of stochastic depth against constant depth, on 2 gloo ranks (CPU), side by side.

DDP's reducer by default waits for a gradient of every parameter, and a dropped block's
branch does not run. Measured here against a constant-depth DDP run:

  constant           survival_rule="none": every parameter gets a gradient (the baseline)
  zero-gradients     linear decay to p_L under DDP's default settings: the mechanism gives a
                     dropped block's parameters an exact zero gradient when backward reaches
                     the block (what every converted network does, in any loop)
  find-unused        the same network under ``find_unused_parameters=True``: DDP also searches
                     the autograd graph after every forward pass (the usual workaround)

Both stochastic variants draw the same gates (same seed), so they compute the same blocks.
Started plainly, it spawns 2 gloo ranks on the CPU, one thread each; started by torchrun, it
runs on the ranks torchrun made (``torchrun --nproc_per_node 2 benchmarks/ddp_step_time.py
--device cuda`` on a node with 2 GPUs: NCCL). The variants take turns in rounds, in an order rotated every round
(a variant measured right after another can run slower, whichever it is: each takes every
place equally often); a variant's time is the median of its rounds' mean step times. Rank 0
prints the table.

    python benchmarks/ddp_step_time.py --model resnet110 --batch-size 64 --steps 10 --rounds 6
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import stochdepth
from stochdepth.depth import survival_probs
from stochdepth.train.distributed import join

VARIANTS = ("constant", "zero-gradients", "find-unused")


def build(variant: str, args: argparse.Namespace, ranks) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
    """(the module, what the step calls, its optimizer) for ``variant``."""
    rule = "none" if variant == "constant" else "linear"
    model = stochdepth.create_model(
        args.model, survival_rule=rule, final_survival_prob=args.final_survival_prob, gate_seed=0
    ).to(ranks.device)
    if variant == "find-unused":
        for param in model.parameters():
            param.grad = torch.zeros_like(param)
        network = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[ranks.device.index] if ranks.device.type == "cuda" else None,
            find_unused_parameters=True,
            gradient_as_bucket_view=True,
        )
    else:
        network = ranks.wrap(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    return model, network, optimizer


def mean_step_seconds(network: nn.Module, optimizer, batch, steps: int, ranks) -> float:
    images, labels = batch
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(network(images), labels)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
    if ranks.device.type == "cuda":
        torch.cuda.synchronize(ranks.device)
    dist.barrier()
    return (time.perf_counter() - start) / steps


def spawned_rank(rank: int, args: argparse.Namespace, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    measure(args)


def measure(args: argparse.Namespace) -> None:
    """Time every variant on this rank; rank 0 prints the table."""
    ranks = join(args.device)
    torch.manual_seed(ranks.rank)
    local = ranks.local_batch(args.batch_size)
    batch = (torch.randn(local, 3, 32, 32, device=ranks.device), torch.randint(0, 10, (local,), device=ranks.device))
    built = {variant: build(variant, args, ranks) for variant in VARIANTS}
    for _, network, optimizer in built.values():
        mean_step_seconds(network, optimizer, batch, 2, ranks)
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for round_index in range(args.rounds):
        shift = round_index % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            _, network, optimizer = built[variant]
            times[variant].append(mean_step_seconds(network, optimizer, batch, args.steps, ranks))
    if ranks.is_main:
        probs = survival_probs(built["zero-gradients"][0])
        share = sum(probs) / len(probs)
        constant = statistics.median(times["constant"])
        where = torch.cuda.get_device_name(ranks.device) if ranks.device.type == "cuda" else "CPU"
        print(
            f"model={args.model} global batch={args.batch_size} ({ranks.world_size} {dist.get_backend()} ranks, "
            f"{torch.get_num_threads()} thread(s) each, {where}) p_L={args.final_survival_prob} steps={args.steps} "
            f"rounds={args.rounds} torch={torch.__version__}"
        )
        print(f"expected share of residual branches run: {share:.3f}")
        print("| variant | ms/step (median of rounds) | fastest and slowest round | ratio to constant-depth DDP |")
        print("|---|---|---|---|")
        for variant in VARIANTS:
            median = statistics.median(times[variant])
            spread = f"{1000 * min(times[variant]):.1f} to {1000 * max(times[variant]):.1f}"
            print(f"| {variant} | {1000 * median:.1f} | {spread} | {median / constant:.3f} |")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet110")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch (the ranks share it)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda under torchrun (one GPU per rank)")
    parser.add_argument("--final-survival-prob", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    parser.add_argument("--rounds", type=int, default=6, help="a multiple of 3 gives each variant each place")
    args = parser.parse_args()
    if "RANK" in os.environ:
        measure(args)
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(spawned_rank, args=(args, port), nprocs=2)


if __name__ == "__main__":
    main()
