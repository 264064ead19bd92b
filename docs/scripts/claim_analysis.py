"""The claim experiment's statistics: per arm mean, standard deviation and range of the test error at
the best validation evaluation, and each comparison's difference, its standard error and Welch's t-test.

    python docs/scripts/claim_analysis.py EXPERIMENT_FOLDER   (the OUT of claim_experiment.sh)
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

from scipy import stats

ARMS = {
    "constant depth": "-none-",
    "linear p_L=0.5, paper scaling": "-linear-p0.5-seed",
    "linear p_L=0.5, inverted scaling": "-linear-p0.5-inverted-",
}
COMPARISONS = [
    ("linear p_L=0.5, paper scaling", "constant depth"),
    ("linear p_L=0.5, inverted scaling", "linear p_L=0.5, paper scaling"),
]


def summaries(folder: Path) -> dict[str, list[dict]]:
    arms: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for summary in sorted(folder.glob("runs/*/summary.json")):
        for arm, marker in ARMS.items():
            if marker in summary.parent.name:
                arms[arm].append({"run": summary.parent.name, **json.loads(summary.read_text())})
    return arms


def main() -> None:
    arms = summaries(Path(sys.argv[1]))
    print("| arm | runs | test error at best val. (%): mean | std | range | best val. error (%) mean | train s/run |")
    print("|---|---|---|---|---|---|---|")
    errors = {}
    for arm, runs in arms.items():
        values = [100 * run["test_error_at_best_val"] for run in runs]
        errors[arm] = values
        if not values:
            continue
        spread = statistics.stdev(values) if len(values) > 1 else math.nan
        val = statistics.mean(100 * run["best_val_error"] for run in runs)
        seconds = statistics.mean(run["train_seconds"] for run in runs)
        print(
            f"| {arm} | {len(values)} | {statistics.mean(values):.2f} | {spread:.2f} | "
            f"{min(values):.2f} to {max(values):.2f} | {val:.2f} | {seconds:.0f} |"
        )
    print()
    print("| comparison | difference (points) | standard error | Welch t | p (two-sided) |")
    print("|---|---|---|---|---|")
    for first, second in COMPARISONS:
        a, b = errors[first], errors[second]
        if len(a) < 2 or len(b) < 2:
            continue
        difference = statistics.mean(a) - statistics.mean(b)
        standard_error = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
        test = stats.ttest_ind(a, b, equal_var=False)
        print(
            f"| {first} minus {second} | {difference:+.2f} | {standard_error:.2f} | {test.statistic:.2f} | "
            f"{test.pvalue:.3g} |"
        )


if __name__ == "__main__":
    main()
