"""prism_lm.stats: every interval and test against hand-computed values and synthetic data."""

import math

import numpy as np
import pytest

from prism_lm.stats import (
    binomial_interval,
    bounded_mean_interval,
    holm,
    mean_interval,
    paired_difference,
    t_quantile,
    tost_p,
)


def test_t_interval_matches_the_textbook_formula():
    s = mean_interval([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["n"] == 3
    half = 4.302653 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n), sd = 1
    assert s["ci95"] == pytest.approx([2 - half, 2 + half], rel=1e-6)
    assert t_quantile(1) == pytest.approx(12.7062, abs=1e-4) and t_quantile(10_000) == pytest.approx(1.9602, abs=1e-4)
    # two-sided one-sample t test: t = 2 / (1 / sqrt 3) = 3.464 on 2 df
    assert s["p"] == pytest.approx(0.07418, abs=1e-4)


def test_the_t_test_p_equals_scipys_one_sample_t_test():
    from scipy import stats as scipy_stats

    for values, null in (([0.1, 0.3, 0.2, 0.5, 0.4], 0.0), ([1.0, 1.1, 0.9], 1.05), ([-2.0, 3.0, 0.5, 0.7], 0.2)):
        expected = scipy_stats.ttest_1samp(values, null).pvalue
        assert mean_interval(values, null)["p"] == pytest.approx(expected, rel=1e-12)


def test_one_value_has_no_interval_and_non_finite_values_are_left_out():
    assert mean_interval([5.0]) == {"mean": 5.0, "ci95": None, "n": 1, "p": None}
    assert mean_interval([1.0, float("nan"), 3.0, None])["n"] == 2
    assert mean_interval([]) == {"mean": None, "ci95": None, "n": 0, "p": None}


def test_paired_differences_use_only_shared_seeds():
    d = paired_difference({0: 1.0, 1: 2.0, 2: 9.0}, {0: 0.5, 1: 1.0, 3: 7.0})
    assert d["seeds"] == [0, 1] and d["mean"] == pytest.approx(0.75)


def test_holm_against_hand_computed_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    untested = holm([0.2, None, 0.01])  # an untested entry keeps no p and does not count in m
    assert untested[1] is None and untested[0] == pytest.approx(0.2) and untested[2] == pytest.approx(0.02)
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5 x 2 = 1.0, then monotone, capped at 1


def test_tost_tells_equivalent_from_different_from_inconclusive():
    rng = np.random.default_rng(0)
    equivalent = rng.normal(0.0, 0.005, 10)
    different = rng.normal(0.1, 0.005, 10)
    noisy = rng.normal(0.0, 0.05, 5)
    assert tost_p(equivalent, margin=0.02) < 0.01
    assert tost_p(different, margin=0.02) > 0.99
    assert 0.05 < tost_p(noisy, margin=0.02) < 0.99
    assert tost_p([0.01], margin=0.02) is None


def test_bounded_intervals_stay_inside_zero_one():
    values = [0.0, 0.01, 0.02]
    plain = mean_interval(values)
    assert plain["ci95"][0] < 0  # what a t interval does to a fraction near 0
    s = bounded_mean_interval(values)
    assert 0.0 <= s["ci95"][0] <= s["mean"] <= s["ci95"][1] <= 1.0 and "logit" in s["method"]
    assert bounded_mean_interval([0.0, 0.0, 0.0])["ci95"] == [0.0, 0.0]
    high = bounded_mean_interval([0.97, 0.99, 1.0, 0.98])
    assert high["ci95"][1] <= 1.0 and high["ci95"][0] < high["mean"]


def test_binomial_interval_is_clopper_pearson():
    d = binomial_interval(2, 5)
    assert d["rate"] == 0.4 and d["ci95"] == pytest.approx([0.05274, 0.85337], abs=1e-4)
    assert binomial_interval(0, 5)["ci95"] == pytest.approx([0.0, 0.52182], abs=1e-4)
    assert binomial_interval(0, 0)["ci95"] is None


def test_critical_level_is_the_first_level_where_most_runs_fail():
    from prism_lm.stats import critical_level

    clear = critical_level({0.01: [False] * 5, 0.1: [False] * 5, 0.3: [True] * 5, 1.0: [True] * 5})
    assert clear["critical"] == 0.3 and clear["ci95"] == [0.3, 0.3]  # no seed disagrees: no spread
    mixed = critical_level({0.01: [False] * 5, 0.1: [True, True, True, False, False], 0.3: [True] * 5})
    assert mixed["critical"] == 0.1 and mixed["ci95"] == [0.1, 0.3]  # resampled seeds sometimes keep 0.1 below 1/2
    never = critical_level({0.01: [False] * 5, 0.1: [False, True, False, False, False]})
    assert never["critical"] is None and never["ci95"][1] is None  # beyond the ladder
