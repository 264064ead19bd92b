"""torch.compile and stochastic depth: compiled stochastic vs compiled constant depth, side by side, with recompiles.

Variants, built from the same model name with the same weights and trained on the same batch:
  eager constant / eager <mode>        no compilation
  compiled constant / compiled <mode>  ``model.compile(backend=...)`` of the whole network
for each drop mode of ``--drop-modes`` (default: batch, sample and subset).

Under ``torch.compile`` the gate decisions run eagerly and each branch compiles through a
function of its own, so a new gate pattern must not recompile; the table counts the graphs
dynamo compiled during warm-up and during the measured steps (a new graph in the measured steps
is a recompilation), at dynamo's default settings, and the last line says whether any function
reached dynamo's recompile limit (it would then run uncompiled). The variants take turns step by
step; a variant's time is the median of its measured steps.

    python benchmarks/compile_step_time.py --model resnet56 --batch-size 64 --warmup 6 --steps 12
    python benchmarks/compile_step_time.py --model resnet110 --backend eager --warmup 4 --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import stochdepth
from stochdepth.depth import DROP_MODES


def counting(backend: str, graphs: list[int]) -> object:
    """``backend`` (a registered dynamo backend name) wrapped to count the graphs it compiles."""
    from torch._dynamo import lookup_backend

    inner = lookup_backend(backend)

    def compile_graph(graph_module: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> object:
        graphs.append(1)
        return inner(graph_module, example_inputs)

    return compile_graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--final-survival-prob", type=float, default=0.5)
    parser.add_argument("--drop-modes", nargs="+", default=["batch", "sample", "subset"], choices=DROP_MODES)
    parser.add_argument("--backend", default="inductor", help="dynamo backend (inductor needs a C compiler)")
    parser.add_argument("--warmup", type=int, default=6, help="steps per variant before timing (compilation)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    args = parser.parse_args()
    torch.manual_seed(0)

    def build(depth: str) -> nn.Module:
        return stochdepth.create_model(
            args.model,
            survival_rule="none" if depth == "constant" else "linear",
            final_survival_prob=args.final_survival_prob,
            drop_mode="batch" if depth == "constant" else depth,
            gate_seed=0,
        )

    weights = build("constant").state_dict()
    graphs: dict[str, list[int]] = {}
    variants: dict[str, nn.Module] = {}
    for depth in ("constant", *args.drop_modes):
        for compiled in (False, True):
            name = f"{'compiled' if compiled else 'eager'} {depth}"
            variants[name] = build(depth)
            variants[name].load_state_dict(weights)
            if compiled:
                graphs[name] = []
                variants[name].compile(backend=counting(args.backend, graphs[name]))
    optimizers = {
        name: torch.optim.SGD(net.train().parameters(), lr=0.01, momentum=0.9) for name, net in variants.items()
    }
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 10, (args.batch_size,))

    def step(name: str) -> float:
        start = time.perf_counter()
        optimizers[name].zero_grad()
        F.cross_entropy(variants[name](images), labels).backward()
        optimizers[name].step()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        for name in variants:
            step(name)
    warm_graphs = {name: len(count) for name, count in graphs.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.steps):
        for name in variants:
            times[name].append(step(name))
    probs = stochdepth.survival_probs(variants[f"eager {args.drop_modes[0]}"])
    print(
        f"model={args.model} batch={args.batch_size} image={args.image_size} p_L={args.final_survival_prob} "
        f"backend={args.backend} warmup={args.warmup} steps={args.steps} "
        f"threads={torch.get_num_threads()} torch={torch.__version__}"
    )
    print(f"expected share of residual branches run: {sum(probs) / len(probs):.3f}")
    print("| variant | ms/step (median) | ratio to its constant depth | graphs in warm-up | graphs in timed steps |")
    print("|---|---|---|---|---|")
    for name in variants:
        median = statistics.median(times[name])
        base = statistics.median(times[f"{name.split()[0]} constant"])
        warm = warm_graphs.get(name, "—")
        later = len(graphs[name]) - warm_graphs[name] if name in graphs else "—"
        print(f"| {name} | {1000 * median:.1f} | {median / base:.3f} | {warm} | {later} |")
    from torch._dynamo.utils import counters

    limit_hits = sum(
        count for reason, count in counters["unimplemented"].items() if "recompile limit" in reason.lower()
    )
    print(f"functions that reached dynamo's recompile limit: {limit_hits}")


if __name__ == "__main__":
    main()
