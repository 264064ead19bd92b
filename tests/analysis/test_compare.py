"""The paired comparison of two arms: its tests against scipy's and textbook values, its power calculation."""

import math

import pytest
from scipy import stats

from stochdepth.analysis.compare import compare, paired_t_power, pairs_needed


def test_the_tests_agree_with_scipy_and_pair_by_seed():
    first = {1: 23.1, 2: 24.0, 3: 22.5, 4: 23.8, 9: 30.0}
    second = {1: 22.0, 2: 23.2, 3: 22.9, 4: 22.1, 5: 21.0}
    result = compare(first, second)
    seeds = [1, 2, 3, 4]
    differences = [first[seed] - second[seed] for seed in seeds]
    assert result.pairs == 4
    assert result.difference == pytest.approx(sum(differences) / 4)
    assert result.paired_p == pytest.approx(
        stats.ttest_rel([first[s] for s in seeds], [second[s] for s in seeds]).pvalue
    )
    assert result.welch_p == pytest.approx(
        stats.ttest_ind(list(first.values()), list(second.values()), equal_var=False).pvalue
    )
    spread = math.sqrt(sum((d - result.difference) ** 2 for d in differences) / 3)
    assert result.paired_standard_error == pytest.approx(spread / 2)
    # the 95% interval of the paired t-test: mean ± t_{0.975, 3} s.e. (t_{0.975, 3} = 3.182)
    half_width = 3.182446305284263 * spread / 2
    assert result.interval == pytest.approx((result.difference - half_width, result.difference + half_width))
    paired = stats.ttest_rel([first[s] for s in seeds], [second[s] for s in seeds])
    if hasattr(paired, "confidence_interval"):  # SciPy >= 1.10
        assert result.interval == pytest.approx(tuple(paired.confidence_interval()))


def test_the_interval_excludes_zero_exactly_when_the_paired_test_rejects():
    for shift in (0.0, 0.3, 0.6, 0.9, 1.2):
        result = compare(
            {seed: 20.0 + shift + 0.5 * (seed % 2) for seed in range(6)}, {seed: 20.0 for seed in range(6)}
        )
        excludes_zero = result.interval[0] > 0 or result.interval[1] < 0
        assert excludes_zero == (result.paired_p < 0.05), (shift, result)


def test_equivalence_is_shown_for_close_arms_and_not_for_distant_ones():
    close = compare({seed: 20.0 + 0.1 * (seed % 3) for seed in range(12)}, {seed: 20.05 for seed in range(12)})
    far = compare({seed: 22.0 + 0.1 * (seed % 3) for seed in range(12)}, {seed: 20.0 for seed in range(12)})
    assert close.equivalence_p < 0.001
    assert far.equivalence_p > 0.5 and far.paired_p < 0.001


def test_pairs_needed_matches_the_normal_approximation_and_grows_with_the_spread():
    # normal approximation n = ((z_0.975 + z_0.8) sd / effect)^2; the t-test needs a pair or two more
    approximation = ((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * 1.9) ** 2
    needed = pairs_needed(1.9, 1.0)
    assert approximation <= needed <= approximation + 3
    assert pairs_needed(0.5, 1.0) < pairs_needed(1.0, 1.0) < needed
    assert pairs_needed(0.0, 1.0) is None


@pytest.mark.parametrize(("count", "spread"), [(2, 0.185), (3, 0.5), (5, 1.28), (10, 1.0), (20, 1.9)])
def test_the_power_equals_scipys_noncentral_t_where_that_is_finite(count, spread):
    freedom = count - 1
    critical = stats.t.ppf(0.975, freedom)
    shift = math.sqrt(count) / spread
    expected = stats.nct.sf(critical, freedom, shift) + stats.nct.cdf(-critical, freedom, shift)
    assert paired_t_power(count, spread, 1.0) == pytest.approx(expected, abs=1e-6)


def test_pairs_needed_never_falls_as_the_spread_grows_even_where_the_shift_is_large():
    """SciPy's noncentral t is NaN at a large shift (3 pairs of spread 0.185: shift 9.4); counting NaN as too
    little power had a spread of 0.185 need 6 pairs where 0.19 needed 3."""
    spreads = [0.05 * step for step in range(1, 41)]
    needed = [pairs_needed(spread, 1.0) for spread in spreads]
    assert needed == sorted(needed), list(zip(spreads, needed))
    assert pairs_needed(0.185, 1.0) == 3


@pytest.mark.parametrize(("count", "spread"), [(1, 1.0), (0, 1.0), (5, 0.0), (5, -1.0), (5, math.nan)])
def test_power_without_two_pairs_or_a_positive_spread_is_a_value_error(count, spread):
    with pytest.raises(ValueError, match="at least two pairs and a positive spread"):
        paired_t_power(count, spread, 1.0)


def test_fewer_than_two_pairs_is_a_value_error():
    with pytest.raises(ValueError, match="at least two seeds"):
        compare({1: 1.0, 2: 2.0}, {2: 1.0, 3: 1.0})
