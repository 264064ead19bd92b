"""Comparing two arms of an experiment over seeds: difference, Welch's and the paired t-test, equivalence, power.

The arms are paired by seed (the same data order, initialisation and machine load for both
runs of a seed). Reported side by side, whichever way they go: the mean difference and its 95% interval, Welch's
t-test (unpaired), the paired t-test, the two one-sided tests of equivalence within a margin
(Schuirmann's TOST, on the paired differences), and how many pairs would detect a difference of
one margin with 80% power (two-sided, alpha 0.05), from the spread of the paired differences.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import integrate, stats

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Comparison:
    """``first`` minus ``second`` over the seeds both have (values in the units given, e.g. points of error)."""

    pairs: int
    difference: float
    welch_p: float
    paired_standard_error: float
    interval: tuple[float, float]
    paired_p: float
    equivalence_p: float
    margin: float
    pairs_for_power: int | None


def paired_t_power(count: int, spread: float, effect: float, alpha: float = ALPHA) -> float:
    """The power of a two-sided paired t-test at ``alpha`` over ``count`` pairs whose differences spread ``spread``.

    The statistic is (Z + shift) / sqrt(V / f), with shift = effect / (spread / sqrt(count)),
    f = count - 1 and V chi-square with f degrees of freedom; the rejection probability given V
    is a normal one, integrated over V's density. (SciPy's noncentral t, which computes the
    same, returns NaN for a large shift.) Fewer than two pairs or a spread that is not positive
    is a ValueError: the test is undefined there.
    """
    if count < 2 or not spread > 0:
        raise ValueError(f"power needs at least two pairs and a positive spread (got {count} pairs, spread {spread})")
    freedom = count - 1
    critical = stats.t.ppf(1 - alpha / 2, freedom)
    shift = effect / (spread / math.sqrt(count))

    def rejected_given(variance: float) -> float:
        bound = critical * math.sqrt(variance / freedom)
        return (stats.norm.sf(bound - shift) + stats.norm.cdf(-bound - shift)) * stats.chi2.pdf(variance, freedom)

    return integrate.quad(rejected_given, 0.0, math.inf)[0]


def pairs_needed(spread: float, effect: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The number of pairs a paired t-test needs to detect ``effect`` with ``power``, given the SD of differences.

    The smallest n with :func:`paired_t_power` >= ``power`` (two-sided at ``alpha``); ``None``
    when the spread is not known (fewer than two pairs) or is zero.
    """
    if not math.isfinite(spread) or spread <= 0:
        return None
    for count in range(2, 10_000):
        if paired_t_power(count, spread, effect, alpha) >= power:
            return count
    return None


def compare(first: dict[int, float], second: dict[int, float], margin: float = 1.0) -> Comparison:
    """``first`` against ``second``, each a value per seed; the seeds both have are the pairs.

    Needs at least two pairs; ``ValueError`` otherwise.
    """
    seeds = sorted(set(first) & set(second))
    if len(seeds) < 2:
        raise ValueError(f"a comparison needs at least two seeds in both arms, got {len(seeds)}")
    differences = [first[seed] - second[seed] for seed in seeds]
    mean = statistics.fmean(differences)
    spread = statistics.stdev(differences)
    standard_error = spread / math.sqrt(len(seeds))
    welch = stats.ttest_ind(list(first.values()), list(second.values()), equal_var=False)
    paired = stats.ttest_rel([first[seed] for seed in seeds], [second[seed] for seed in seeds])
    freedom = len(seeds) - 1
    if standard_error > 0:
        lower = stats.t.sf((mean + margin) / standard_error, freedom)
        upper = stats.t.cdf((mean - margin) / standard_error, freedom)
        equivalence = max(lower, upper)
        half_width = float(stats.t.ppf(1 - ALPHA / 2, freedom)) * standard_error
    else:
        equivalence = 0.0 if abs(mean) < margin else 1.0
        half_width = 0.0
    return Comparison(
        pairs=len(seeds),
        difference=mean,
        welch_p=float(welch.pvalue),
        paired_standard_error=standard_error,
        interval=(mean - half_width, mean + half_width),
        paired_p=float(paired.pvalue),
        equivalence_p=float(equivalence),
        margin=margin,
        pairs_for_power=pairs_needed(spread, margin),
    )
