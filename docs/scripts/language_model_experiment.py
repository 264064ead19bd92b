"""Layer drop on a small Llama trained byte by byte on the Python standard library's own source (docs/results.md).

Text that is on every machine without a download: the standard library's top-level ``*.py``
files, sorted by name; every tenth file is held out for validation. A Llama-style model
(transformers, random weights, the 256 byte values as vocabulary) is trained on random windows
with AdamW and a cosine learning rate, in the user's own loop. The arms train in lockstep in
one process, one thread: step k of every arm sees the same batch, and the arms' steps
alternate, so their wall times are measured side by side under one load. Each seed gives
every arm the same initial weights and the gates the seed's own draws. Validation loss (nats
per byte, on fixed held-out windows, the full network) every tenth of the run.

    python docs/scripts/language_model_experiment.py run docs/data/language_model_runs.json --seeds 1 2 3
    python docs/scripts/language_model_experiment.py table docs/data/language_model_runs.json [--plot FIGURE.png]

``run`` appends each finished seed to the file (seeds already there are skipped), so an
interrupted run continues where it stopped. ``table`` prints each arm's final validation loss
and training time, and each arm against constant depth: the paired difference, Welch's and the
paired t-test, the equivalence test within ``--margin`` nats per byte, and the mean of the
per-seed training-time ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sysconfig
import time
from pathlib import Path

import torch
import transformers

import stochdepth
from stochdepth.analysis.compare import compare
from stochdepth.analysis.plots import curves_with_bands

ARMS = {
    "constant": {"survival_rule": "none"},
    "linear": {"survival_rule": "linear", "final_survival_prob": 0.5},
    "linear-ramp": {"survival_rule": "linear", "final_survival_prob": 0.5, "time_schedule": "ramp"},
    "exponential": {"survival_rule": "exponential", "final_survival_prob": 0.5},
}
"""Constant depth; layer drop with the rate rising linearly over the branches to 0.5 (from the first step, or
ramped in over the first half of the run: composer's drop warm-up), or exponentially (LayerSkip)."""


def stdlib_text() -> tuple[torch.Tensor, torch.Tensor, dict[str, object]]:
    """The standard library's top-level source files as bytes: (training, validation, what was read)."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    parts: tuple[list[bytes], list[bytes]] = ([], [])
    for index, path in enumerate(files):
        parts[index % 10 == 0].append(path.read_bytes())
    train, validation = (torch.frombuffer(bytearray(b"\n".join(part)), dtype=torch.uint8).long() for part in parts)
    source = {"python": platform.python_version(), "files": len(files), "bytes": [len(train), len(validation)]}
    return train, validation, source


def windows(text: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    return torch.stack([text[start : start + length] for start in starts.tolist()])


def build(arm: str, seed: int, args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 64,
        max_position_embeddings=args.sequence,
    )
    model = transformers.LlamaForCausalLM(config)
    if ARMS[arm]["survival_rule"] == "none":
        return model
    timing = {"time_schedule_fraction": 0.5, "total_steps": args.steps} if "time_schedule" in ARMS[arm] else {}
    return stochdepth.stochastic_depth(model, **ARMS[arm], **timing, gate_seed=seed)


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """The learning-rate factor: linear warm-up over ``warmup`` steps, then a cosine down to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def validation_loss(model: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    model.eval()
    with torch.no_grad():
        loss = statistics.fmean(float(model(input_ids=ids, labels=ids).loss) for ids in batches)
    model.train()
    return loss


def run_seed(seed: int, args: argparse.Namespace, train: torch.Tensor, validation: torch.Tensor) -> list[dict]:
    models = {arm: build(arm, seed, args).train() for arm in args.arms}
    optimizers = {
        arm: torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1) for arm, model in models.items()
    }
    schedules = {
        arm: torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_with_warmup(step, args.steps, args.steps // 20)
        )
        for arm, optimizer in optimizers.items()
    }
    held_out = torch.Generator().manual_seed(0)
    shape = (args.validation_batches, args.batch)
    starts = torch.randint(0, len(validation) - args.sequence, shape, generator=held_out)
    validation_batches = [windows(validation, row, args.sequence) for row in starts]
    data = torch.Generator().manual_seed(seed)
    runs = {arm: {"arm": arm, "seed": seed, "train_seconds": 0.0, "curve": []} for arm in models}
    every = max(1, args.steps // 10)
    for step in range(1, args.steps + 1):
        ids = windows(train, torch.randint(0, len(train) - args.sequence, (args.batch,), generator=data), args.sequence)
        for arm, model in models.items():
            start = time.perf_counter()
            optimizers[arm].zero_grad()
            model(input_ids=ids, labels=ids).loss.backward()
            optimizers[arm].step()
            schedules[arm].step()
            runs[arm]["train_seconds"] += time.perf_counter() - start
        if step % every == 0 or step == args.steps:
            for arm, model in models.items():
                runs[arm]["curve"].append([step, validation_loss(model, validation_batches)])
            losses = "  ".join(f"{arm} {runs[arm]['curve'][-1][1]:.4f}" for arm in models)
            print(f"seed {seed} step {step}/{args.steps}  validation loss {losses}", flush=True)
    for run in runs.values():
        run["validation_loss"] = run["curve"][-1][1]
    return list(runs.values())


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    train, validation, source = stdlib_text()
    kept = ("layers", "hidden", "sequence", "batch", "steps", "lr", "arms", "validation_batches")
    settings = {key: getattr(args, key) for key in kept}
    record = {"settings": settings, "source": source, "torch": torch.__version__, "runs": []}
    if args.out.exists():
        record = json.loads(args.out.read_text())
        if record["settings"] != settings:
            raise SystemExit(f"{args.out} holds runs with other settings: {record['settings']}")
    for seed in args.seeds:
        if any(run["seed"] == seed for run in record["runs"]):
            continue
        record["runs"].extend(run_seed(seed, args, train, validation))
        args.out.write_text(json.dumps(record, indent=1) + "\n")


def table(args: argparse.Namespace) -> None:
    record = json.loads(args.numbers.read_text())
    settings, runs = record["settings"], record["runs"]
    by_arm = {arm: {run["seed"]: run for run in runs if run["arm"] == arm} for arm in settings["arms"]}
    print(
        f"Llama-style, {settings['layers']} layers, hidden {settings['hidden']}, {settings['steps']} steps of "
        f"{settings['batch']} x {settings['sequence']} bytes; {len(by_arm['constant'])} seeds"
    )
    print("")
    print(
        "| arm | validation loss (nats/byte), mean ± SE | difference to constant (paired) | Welch p | paired p "
        f"| equivalent within ±{args.margin} (TOST p) | training time / constant (mean of seeds) |"
    )
    print("|---|---|---|---|---|---|---|")
    constant = by_arm["constant"]
    for arm, seeds in by_arm.items():
        losses = [run["validation_loss"] for run in seeds.values()]
        spread = statistics.stdev(losses) / math.sqrt(len(losses)) if len(losses) > 1 else float("nan")
        cells = [f"{statistics.fmean(losses):.4f} ± {spread:.4f}"]
        if arm == "constant":
            cells += ["", "", "", "", "1"]
        else:
            versus = compare(
                {seed: run["validation_loss"] for seed, run in seeds.items()},
                {seed: run["validation_loss"] for seed, run in constant.items()},
                margin=args.margin,
            )
            ratio = statistics.fmean(
                run["train_seconds"] / constant[seed]["train_seconds"] for seed, run in seeds.items()
            )
            cells += [
                f"{versus.difference:+.4f} ± {versus.paired_standard_error:.4f}",
                f"{versus.welch_p:.2g}",
                f"{versus.paired_p:.2g}",
                f"{versus.equivalence_p:.2g}",
                f"{ratio:.3f}",
            ]
        print(f"| {arm} | " + " | ".join(cells) + " |")
    if args.plot is not None:
        curves = {arm: [run["curve"] for run in seeds.values()] for arm, seeds in by_arm.items()}
        title = f"Llama-style, {settings['layers']} layers, {settings['steps']} steps (band: 1 standard error)"
        curves_with_bands(curves, "training step", "validation loss (nats per byte)", title, args.plot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    running = commands.add_parser("run", help="train the arms of each seed in lockstep; append to OUT")
    running.add_argument("out", type=Path)
    running.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    running.add_argument("--arms", nargs="+", choices=list(ARMS), default=["constant", "linear", "linear-ramp"])
    running.add_argument("--layers", type=int, default=6)
    running.add_argument("--hidden", type=int, default=128)
    running.add_argument("--sequence", type=int, default=128)
    running.add_argument("--batch", type=int, default=8)
    running.add_argument("--steps", type=int, default=1500)
    running.add_argument("--lr", type=float, default=3e-3)
    running.add_argument("--validation-batches", type=int, default=8)
    tabling = commands.add_parser("table", help="print the table of docs/results.md from the kept numbers")
    tabling.add_argument("numbers", type=Path)
    tabling.add_argument("--margin", type=float, default=0.02, help="equivalence margin, nats per byte")
    tabling.add_argument("--plot", type=Path, help="also draw validation loss against step, each arm")
    args = parser.parse_args()
    if args.command == "run":
        sizes = ("layers", "hidden", "sequence", "batch", "steps", "validation_batches")
        too_small = [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in sizes if getattr(args, name) < 1]
        if too_small or args.lr <= 0:
            parser.error(f"sizes must be at least 1 and --lr positive, got {', '.join(too_small) or f'--lr {args.lr}'}")
        run(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
