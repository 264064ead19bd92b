"""The short-budget experiment's numbers (docs/results.md): collected from its run folders, tabled, plotted.

    python docs/scripts/time_schedule_analysis.py collect EXPERIMENT docs/data/time_schedule_runs.json [--seeds 1 2]
    python docs/scripts/time_schedule_analysis.py table docs/data/time_schedule_runs.json [--plot FIGURE.png]
    python docs/scripts/time_schedule_analysis.py table docs/data/time_schedule_pilot_2700_steps.json \
        --go-no-go 540 810 1080 1350
    python docs/scripts/time_schedule_analysis.py table docs/data/time_schedule_runs.json \
        --recalibrated docs/data/recalibrated_batchnorm_runs.json

``collect`` keeps, per run (finished or not), what the tables and the figure need: its arm and seed, the summary
(test error at the best validation evaluation, best validation error, training seconds) and each
evaluation's iteration, validation error, training error, training loss and training seconds.
``table`` prints the per-arm table, each arm against constant depth (the difference's 95% interval,
Welch's and the paired t-test, the equivalence test with a margin of 1 point, the pairs a 1-point difference would need
at 80% power) and the training-time ratio of each seed's side-by-side runs: over the whole run,
and over its first tenth, which every run of a seed trained under the same load (they start
together; later the faster runs finish first and the rest get more of the cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from stochdepth.analysis.compare import compare
from stochdepth.analysis.plots import curves_with_bands

CONSTANT = "none"
STEPS_PER_EPOCH = 9
"""The experiment's 300 images in batches of 32, the last partial batch dropped (summaries count epochs)."""
SUMMARY_KEYS = ("test_error_at_best_val", "best_val_error", "best_epoch", "train_seconds", "epochs")
PERCENT = 100.0
NOT_BESIDE_CONSTANT = {("linear-late0.25", 1), ("linear-ramp0.5", 1)}
"""Runs not started beside their seed's constant-depth run (the third arm's pilot ran as a pair of its own)."""


def arm_and_seed(run_name: str) -> tuple[str, int]:
    """``resnet56-linear-late0.25-seed3`` -> (``linear-late0.25``, 3)."""
    stem, seed = run_name.rsplit("-seed", 1)
    return stem.split("-", 1)[1], int(seed)


def collect(folder: Path, seeds: list[int] | None = None) -> list[dict]:
    """The numbers of the experiment's runs (of ``seeds`` only, if given: leave out seeds still running)."""
    runs = []
    for run in sorted(path.parent for path in folder.glob("runs/*/metrics.jsonl")):
        arm, seed = arm_and_seed(run.name)
        if seeds is not None and seed not in seeds:
            continue
        finished = (run / "summary.json").is_file()
        summary = json.loads((run / "summary.json").read_text()) if finished else dict.fromkeys(SUMMARY_KEYS)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        runs.append(
            {
                "arm": arm,
                "seed": seed,
                "finished": finished,
                **{key: summary[key] for key in SUMMARY_KEYS},
                "evaluations": [
                    {
                        key: record[key]
                        for key in ("iteration", "val_error", "train_error", "train_loss", "epoch_seconds")
                    }
                    for record in records
                ],
            }
        )
    return runs


def by_arm(runs: list[dict], key: str) -> dict[str, dict[int, float]]:
    """Per arm, the finished runs' ``key`` by seed (a run stopped early is kept in the numbers, not in the tables)."""
    arms: dict[str, dict[int, float]] = {}
    for run in runs:
        if run["finished"]:
            arms.setdefault(run["arm"], {})[run["seed"]] = run[key]
    return arms


def table(runs: list[dict]) -> list[str]:
    errors = {
        arm: {seed: PERCENT * value for seed, value in values.items()}
        for arm, values in by_arm(runs, "test_error_at_best_val").items()
    }
    seconds = by_arm(runs, "train_seconds")
    first_tenth = {(run["arm"], run["seed"]): run["evaluations"][0]["epoch_seconds"] for run in runs if run["finished"]}
    vals = by_arm(runs, "best_val_error")
    arms = [CONSTANT, *sorted(arm for arm in errors if arm != CONSTANT)]
    lines = [
        "| arm | runs | test error at best val. (%): mean | std | range | best val. error (%) mean |",
        "|---|---|---|---|---|---|",
    ]
    for arm in arms:
        values = list(errors.get(arm, {}).values())
        if not values:
            continue
        spread = f"{statistics.stdev(values):.2f}" if len(values) > 1 else "—"
        lines.append(
            f"| {arm} | {len(values)} | {statistics.fmean(values):.2f} | {spread} | {min(values):.2f} to "
            f"{max(values):.2f} | {PERCENT * statistics.fmean(vals[arm].values()):.2f} |"
        )
    comparisons = [
        "",
        "| comparison | pairs | difference (points) | paired s.e. | 95% interval | paired p | Welch p "
        "| equivalence p (±1 point) | pairs for 80% power at 1 point | time ratio, whole run "
        "| time ratio, first tenth |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    header = len(comparisons)
    for arm in arms[1:]:
        shared = sorted(set(errors[arm]) & set(errors.get(CONSTANT, {})))
        if len(shared) < 2:
            continue
        result = compare(errors[arm], errors[CONSTANT])
        beside = [seed for seed in shared if (arm, seed) not in NOT_BESIDE_CONSTANT]
        whole = [seconds[arm][seed] / seconds[CONSTANT][seed] for seed in beside]
        first = [first_tenth[arm, seed] / first_tenth[CONSTANT, seed] for seed in beside]
        needed = result.pairs_for_power if result.pairs_for_power is not None else "—"
        comparisons.append(
            f"| {arm} minus {CONSTANT} | {result.pairs} | {result.difference:+.2f} "
            f"| {result.paired_standard_error:.2f} | {result.interval[0]:+.2f} to {result.interval[1]:+.2f} "
            f"| {result.paired_p:.3g} | {result.welch_p:.3g} "
            f"| {result.equivalence_p:.3g} | {needed} | {ratios(whole)} | {ratios(first)} |"
        )
    return lines + comparisons if len(comparisons) > header else lines


def ratios(values: list[float]) -> str:
    """Per-seed time ratios and their mean: ``0.895, 0.861 (mean 0.878)``."""
    if not values:
        return "—"
    return f"{', '.join(f'{value:.3f}' for value in values)} (mean {statistics.fmean(values):.3f})"


ARM_NAMES = {CONSTANT: "constant depth", "linear": "linear p_L = 0.5"}


def go_no_go_table(runs: list[dict], steps: list[int]) -> list[str]:
    """Per run, the training error (%) over the window before each of ``steps`` (the last: the first lr drop)."""
    header = " | ".join(f"{step:,}" for step in steps)
    lines = [f"| run | step {header} | test error at best val. |", "|---|" + "---|" * (len(steps) + 1)]
    for run in sorted(runs, key=lambda run: (run["arm"] != CONSTANT, run["arm"], run["seed"])):
        errors = {record["iteration"]: PERCENT * record["train_error"] for record in run["evaluations"]}
        cells = " | ".join(f"{errors[step]:.2f}" if step in errors else "—" for step in steps)
        if run["finished"]:
            best_step = round(run["best_epoch"] * STEPS_PER_EPOCH)
            tested = f"{PERCENT * run['test_error_at_best_val']:.2f}% (best val. at step {best_step:,})"
        else:
            tested = "stopped"
        lines.append(f"| {ARM_NAMES.get(run['arm'], run['arm'])}, seed {run['seed']} | {cells} | {tested} |")
    return lines


def recalibration_table(as_trained: list[dict], recalibrated: list[dict]) -> list[str]:
    """Validation error (%) at each evaluation with BatchNorm statistics as trained and recalibrated, per run.

    ``recalibrated`` holds reruns of runs in ``as_trained`` (same arm and seed) with
    ``--recalibrate-batchnorm``; the last column says whether their training records (loss and
    training error at each evaluation) are identical, as the option promises.
    """
    originals = {(run["arm"], run["seed"]): run for run in as_trained}
    missing = sorted({(run["arm"], run["seed"]) for run in recalibrated} - set(originals))
    if missing:
        raise ValueError(f"no stored run to set beside the rerun(s) {missing}")
    steps = sorted({record["iteration"] for run in recalibrated for record in run["evaluations"]})
    header = " | ".join(f"{step:,}" for step in steps)
    lines = [
        f"| run | BatchNorm statistics | val. error (%) at step {header} | best val. at step | "
        "test error at best val. (%) | same training |",
        "|---|---|" + "---|" * (len(steps) + 3),
    ]
    for rerun in sorted(recalibrated, key=lambda run: (run["arm"], run["seed"])):
        original = originals[(rerun["arm"], rerun["seed"])]
        trained = [(record["train_loss"], record["train_error"]) for record in original["evaluations"]]
        same = trained == [(record["train_loss"], record["train_error"]) for record in rerun["evaluations"]]
        for run, statistics_kind, last in (
            (original, "as trained", ""),
            (rerun, "recalibrated", "yes" if same else "no"),
        ):
            errors = {record["iteration"]: PERCENT * record["val_error"] for record in run["evaluations"]}
            cells = " | ".join(f"{errors[step]:.2f}" if step in errors else "—" for step in steps)
            best = "— | —"
            if run["finished"]:
                best = f"{round(run['best_epoch'] * STEPS_PER_EPOCH):,} | {PERCENT * run['test_error_at_best_val']:.2f}"
            name = f"{ARM_NAMES.get(run['arm'], run['arm'])}, seed {run['seed']}"
            lines.append(f"| {name} | {statistics_kind} | {cells} | {best} | {last} |")
    return lines


def plot(runs: list[dict], path: Path) -> None:
    finished = [run for run in runs if run["finished"]]
    curves: dict[str, list[list[tuple[float, float]]]] = {}
    for run in sorted(finished, key=lambda run: (run["arm"] != CONSTANT, run["arm"], run["seed"])):
        curve = [(record["iteration"], PERCENT * record["val_error"]) for record in run["evaluations"]]
        curves.setdefault(run["arm"], []).append(curve)
    title = "ResNet-56, 300 Fashion-MNIST images (band: 1 standard error over seeds)"
    curves_with_bands(curves, "training step", "validation error (%)", title, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gather = commands.add_parser("collect")
    gather.add_argument("experiment", type=Path)
    gather.add_argument("out", type=Path)
    gather.add_argument("--seeds", type=int, nargs="+", help="only these seeds (others may still be running)")
    show = commands.add_parser("table")
    show.add_argument("numbers", type=Path)
    show.add_argument("--plot", type=Path)
    show.add_argument("--go-no-go", type=int, nargs="+", metavar="STEP", help="training errors at these steps")
    show.add_argument(
        "--recalibrated", type=Path, help="reruns with --recalibrate-batchnorm (collected), beside theirs"
    )
    args = parser.parse_args(argv)
    if args.command == "collect":
        args.out.write_text(json.dumps(collect(args.experiment, args.seeds), indent=1) + "\n")
        return 0
    try:
        runs = json.loads(args.numbers.read_text())
        if args.recalibrated is not None:
            lines = recalibration_table(runs, json.loads(args.recalibrated.read_text()))
        else:
            lines = go_no_go_table(runs, args.go_no_go) if args.go_no_go else table(runs)
    except (OSError, ValueError, KeyError, TypeError) as error:  # a missing or foreign numbers file: one line
        parser.error(f"{type(error).__name__}: {error}")
    print("\n".join(lines))
    if args.plot is not None:
        plot(runs, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
