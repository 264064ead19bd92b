"""Training-step time of layer drop on a Hugging Face Llama-style model, measured side by side.

A small Llama (random weights, byte vocabulary) trained on random token ids of length 256, batch 8.
Variants, built from the same weights:
  constant      the model as transformers builds it
  linear        stochastic_depth, linear decay over the 2L branches to p_L = 0.5, batch mode
  exponential   the rate rising exponentially over depth to 0.5 (LayerSkip's rule), batch mode
  subset        linear to 0.5, each branch on a fixed round(p_l B) of the rows

They take turns step by step (round robin), so a slow patch of a noisy machine hits them all
alike; each variant's time is the median over its measured steps (AdamW, the usual optimizer
here, included). Printed beside each ratio: the schedule's expected share of the branches' compute
(mean p_l; subset mode: the mean share of rows, ``subset_sizes`` / B), and the measured share of
forward FLOPs over 20 training-mode passes. Embedding and head run at every step.

    python benchmarks/language_model_step_time.py --steps 10
    python benchmarks/language_model_step_time.py --layers 12 --hidden 384 --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

import stochdepth
from stochdepth.depth.gates import subset_sizes


def build(args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3 // 64 * 64,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 64,
        max_position_embeddings=args.sequence,
    )
    return transformers.LlamaForCausalLM(config)


def variants(args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    drop = {"final_survival_prob": 0.5, "gate_seed": 1}
    return {
        "constant": build(args),
        "linear": stochdepth.stochastic_depth(build(args), survival_rule="linear", **drop),
        "exponential": stochdepth.stochastic_depth(build(args), survival_rule="exponential", **drop),
        "subset": stochdepth.stochastic_depth(build(args), survival_rule="linear", drop_mode="subset", **drop),
    }


def expected_share(model: torch.nn.Module, batch: int) -> float:
    """The schedule's expected share of branch compute: mean p_l, or the mean share of rows in subset mode."""
    if not hasattr(model, "depth_options"):
        return 1.0
    probs = stochdepth.survival_probs(model)
    if model.depth_options["drop_mode"] == "subset":
        return float(subset_sizes(torch.tensor(probs), batch).double().mean()) / batch
    return statistics.fmean(probs)


def forward_flops(model: torch.nn.Module, ids: torch.Tensor, passes: int) -> float:
    total = 0
    with torch.no_grad():
        for _ in range(passes):
            with FlopCounterMode(display=False) as counter:
                model(input_ids=ids)
            total += counter.get_total_flops()
    return total / passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--sequence", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps per variant")
    args = parser.parse_args()
    models = {name: model.train() for name, model in variants(args).items()}
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-3) for name, model in models.items()}
    ids = torch.randint(0, 256, (args.batch, args.sequence), generator=torch.Generator().manual_seed(0))

    def timed_step(name: str) -> float:
        start = time.perf_counter()
        optimizers[name].zero_grad(set_to_none=False)
        models[name](input_ids=ids, labels=ids).loss.backward()
        optimizers[name].step()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        for name in models:
            timed_step(name)
    times = {name: [] for name in models}
    for _ in range(args.steps):
        for name in models:
            times[name].append(timed_step(name))
    baseline_flops = forward_flops(models["constant"], ids, 1)
    print(
        f"Llama-style: {args.layers} layers, hidden {args.hidden}, sequence {args.sequence}, batch {args.batch}; "
        f"torch={torch.__version__} transformers={transformers.__version__} threads={torch.get_num_threads()} "
        f"steps={args.steps}"
    )
    print("| variant | median step (ms) | ratio to constant | expected share of branches | forward FLOPs share |")
    print("|---|---|---|---|---|")
    baseline = statistics.median(times["constant"])
    for name, model in models.items():
        median = statistics.median(times[name])
        flops = forward_flops(model, ids, 20 if name != "constant" else 1) / baseline_flops
        print(
            f"| {name} | {median * 1e3:.0f} | {median / baseline:.3f} | {expected_share(model, args.batch):.3f} "
            f"| {flops:.3f} |"
        )


if __name__ == "__main__":
    main()
