import math

import pytest

from prism_lm.experiments.report import decide
from prism_lm.stats import mean_interval, paired_difference, t_quantile


def test_t_interval_matches_the_textbook_formula():
    s = mean_interval([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["n"] == 3
    half = 4.303 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n), sd = 1
    assert s["ci95"] == pytest.approx([2 - half, 2 + half])
    assert t_quantile(1) == 12.706 and t_quantile(1000) == 1.96


def test_one_value_has_no_interval_and_non_finite_values_are_left_out():
    assert mean_interval([5.0]) == {"mean": 5.0, "ci95": None, "n": 1}
    assert mean_interval([1.0, float("nan"), 3.0, None])["n"] == 2
    assert mean_interval([]) == {"mean": None, "ci95": None, "n": 0}


def test_paired_differences_use_only_shared_seeds():
    d = paired_difference({0: 1.0, 1: 2.0, 2: 9.0}, {0: 0.5, 1: 1.0, 3: 7.0})
    assert d["seeds"] == [0, 1] and d["mean"] == pytest.approx(0.75)


@pytest.mark.parametrize("ci, better, null, expected", [
    ([-2.0, -1.0], "lower", 0.0, "supported"),
    ([1.0, 2.0], "lower", 0.0, "contradicted"),
    ([-1.0, 1.0], "lower", 0.0, "inconclusive at this scale"),
    ([1.0, 2.0], "higher", 0.0, "supported"),
    ([-2.0, -1.0], "higher", 0.0, "contradicted"),
    ([0.6, 0.9], "higher", 0.5, "supported"),
    ([0.4, 0.9], "higher", 0.5, "inconclusive at this scale"),
])
def test_a_verdict_reads_which_side_of_the_null_the_interval_lies(ci, better, null, expected):
    assert decide({"ci95": ci}, better, null) == expected


def test_no_interval_is_never_a_verdict():
    assert decide({"ci95": None}, "lower").startswith("inconclusive")
