"""Verdict rules on synthetic seed-level numbers, against hand values: the primary alone, Holm among
the exploratory verdicts, one equivalence rule both ways, power, the minimum-seed refusal,
divergence accounting, one sign convention."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from prism_lm.experiments.report import summarise
from prism_lm.experiments.verdicts import decide, family, gate_results, planned_power
from prism_lm.stats import power_analysis


def _verdict(**kw):
    return {"claim": "c", "metric": "m", "arm": "a", "baseline": "b", "null": 0.0, "better": "lower", **kw}


def _groups(a, b):
    return {"a": {"m": dict(enumerate(a))}, "b": {"m": dict(enumerate(b))}}


def _hand_t(x, null=0.0):
    """Mean, standard error and df of x, written out (the hand values the rules are checked against)."""
    x = np.asarray(x, float)
    return x.mean(), x.std(ddof=1) / np.sqrt(len(x)), len(x) - 1


def test_a_difference_is_decided_by_its_p_and_its_side():
    rng = np.random.default_rng(1)
    b = rng.normal(1.0, 0.01, 6)
    lower = family([_verdict()], _groups(b - 0.1, b), {}, 5)[0]
    assert lower["verdict"] == "supported" and lower["interval"]["mean"] == pytest.approx(-0.1, abs=0.01)
    higher = family([_verdict()], _groups(b + 0.1, b), {}, 5)[0]
    assert higher["verdict"] == "contradicted"  # arm − baseline > 0 where lower supports
    noisy = family([_verdict()], _groups(b + rng.normal(0, 0.5, 6), b), {}, 5)[0]
    assert noisy["verdict"].startswith("inconclusive: the interval allows ") and "equal" not in noisy["verdict"]


DIFFS = np.array([-0.20, -0.10, -0.15, 0.0, -0.25])  # t = 3.25 on 4 df


def test_the_primary_is_tested_alone_and_the_exploratory_verdicts_among_themselves():
    """Raw p 0.0312 (hand: t = 3.25, 4 df) for every verdict. The primary keeps it whatever else the
    file asks; two exploratory verdicts are Holm-adjusted between themselves to 2p = 0.063."""
    m, se, df = _hand_t(DIFFS)
    raw = 2 * stats.t.sf(abs(m / se), df)
    assert raw == pytest.approx(0.0312, abs=1e-4)
    b = np.ones(5)
    verdicts = [_verdict(primary=True), _verdict(claim="d"), _verdict(claim="e")]
    primary, d, e = family(verdicts, _groups(b + DIFFS, b), {}, 5)
    assert primary["p"] == pytest.approx(raw) and primary["p_adjusted"] == pytest.approx(raw)
    assert primary["verdict"] == "supported" and primary["family_size"] == 1
    assert [d["p_adjusted"], e["p_adjusted"]] == pytest.approx([2 * raw, 2 * raw])
    assert d["verdict"].startswith("inconclusive") and d["family_size"] == 2
    alone = family([_verdict(primary=True)], _groups(b + DIFFS, b), {}, 5)[0]
    assert alone["p_adjusted"] == primary["p_adjusted"] and alone["verdict"] == primary["verdict"]
    (single,) = family([_verdict(claim="d")], _groups(b + DIFFS, b), {}, 5)
    assert single["p_adjusted"] == pytest.approx(raw) and single["verdict"] == "supported"


@given(st.lists(st.floats(-1, 1), min_size=5, max_size=8), st.integers(0, 6))
@settings(max_examples=10, deadline=None)
def test_no_number_of_exploratory_verdicts_moves_the_primary(diffs, extra):
    b = np.ones(len(diffs))
    groups = _groups(b + np.array(diffs), b)
    alone = family([_verdict(primary=True)], groups, {}, 5)[0]
    crowded = family([_verdict(claim=f"x{i}") for i in range(extra)] + [_verdict(primary=True)], groups, {}, 5)[-1]
    assert (crowded["p_adjusted"], crowded["verdict"]) == (alone["p_adjusted"], alone["verdict"])


def _equivalence(diffs, margin, **kw):
    b = np.ones(len(diffs))
    return family([_verdict(test="equivalence", margin=margin, primary=True, **kw)],
                  _groups(b + np.asarray(diffs), b), {}, 5)[0]


@pytest.mark.parametrize("shift, margin, expected", [
    (0.0, 0.05, "supported"),       # interval [-0.038, 0.038] (hand: sd 0.0358, se 0.0146, t 2.571): inside ± 0.05
    (0.0, 0.02, "inconclusive"),    # straddles ± 0.02
    (0.5, 0.2, "contradicted"),     # [0.462, 0.538]: wholly beyond + 0.2
    (-0.5, 0.2, "contradicted"),    # wholly beyond - 0.2
    (0.18, 0.2, "inconclusive"),    # [0.142, 0.218]: reaches past + 0.2
])
def test_one_interval_rule_decides_an_equivalence_both_ways(shift, margin, expected):
    """Against hand values: p = 2·min(TOST p, beyond-margin p), and, with no adjustment, supported
    exactly when the 95% t interval lies inside ± margin, contradicted exactly when wholly beyond."""
    diffs = shift + np.array([0.05, -0.05, 0.02, -0.03, 0.01, 0.0])
    m, se, df = _hand_t(diffs)
    half = stats.t.ppf(0.975, df) * se
    p_tost = max(stats.t.sf((m + margin) / se, df), stats.t.cdf((m - margin) / se, df))
    p_beyond = stats.t.sf((m - margin) / se, df) if m >= 0 else stats.t.cdf((m + margin) / se, df)
    e = _equivalence(diffs, margin)
    assert e["p"] == pytest.approx(min(1.0, 2 * min(p_tost, p_beyond)), rel=1e-6)
    inside, beyond = (-margin < m - half and m + half < margin), (m - half > margin or m + half < -margin)
    assert e["verdict"].startswith(expected)
    assert (expected == "supported") == inside and (expected == "contradicted") == beyond


def test_too_few_seeds_decide_nothing_and_leave_the_family():
    b = np.ones(3)
    entries = family([_verdict(), _verdict(claim="d", arm="b", baseline=None)],
                     {"a": {"m": dict(enumerate(b - 1))}, "b": {"m": {0: 1.0, 1: 1.0, 2: 1.1, 3: 1.0, 4: 1.05}}},
                     {}, 5)
    assert entries[0]["verdict"] == "too few seeds (n = 3; at least 5 decide)" and entries[0]["p_adjusted"] is None
    assert entries[1]["family_size"] == 1 and entries[1]["p_adjusted"] == pytest.approx(entries[1]["p"])
    assert decide({"interval": {"n": 0}, "metric": "m"}, None).startswith("not measured")


def test_every_verdict_reports_what_its_seeds_can_see():
    """The MDE at 80% power against a noncentral-t hand computation; the exploratory one at α / k."""
    b = np.ones(5)
    verdicts = [_verdict(primary=True, smallest_effect=0.05), _verdict(claim="d"), _verdict(claim="e")]
    primary, d, _ = family(verdicts, _groups(b + DIFFS, b), {}, 5)
    sd = DIFFS.std(ddof=1)

    def power(effect, alpha):
        crit = stats.t.ppf(1 - alpha / 2, 4)
        nc = effect / sd * np.sqrt(5)
        return stats.nct.sf(crit, 4, nc) + stats.nct.cdf(-crit, 4, nc)

    assert power(primary["power"]["mde"], 0.05) == pytest.approx(0.8, abs=1e-3)
    assert power(d["power"]["mde"], 0.025) == pytest.approx(0.8, abs=1e-3)
    assert d["power"]["mde"] > primary["power"]["mde"]
    assert primary["power"]["power"] == pytest.approx(power(0.05, 0.05), abs=1e-3)
    need = primary["power"]["seeds_needed"]
    assert need > 5 and _power_at(sd, need, 0.05) >= 0.8 > _power_at(sd, need - 1, 0.05)


def _power_at(sd, n, effect):
    crit = stats.t.ppf(0.975, n - 1)
    nc = effect / sd * np.sqrt(n)
    return stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)


def test_an_equivalence_reports_the_margin_its_seeds_can_prove():
    sd, n = 0.05, 6
    pw = power_analysis(sd, n, 0.05, 0.02, "equivalence")
    hand = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.9, n - 1)) * sd / np.sqrt(n)
    assert pw["mde"] == pytest.approx(hand) and pw["power"] < 0.8
    assert power_analysis(sd, pw["seeds_needed"], 0.05, 0.02, "equivalence")["power"] >= 0.8
    assert power_analysis(sd, pw["seeds_needed"] - 1, 0.05, 0.02, "equivalence")["power"] < 0.8


def test_a_primary_that_cannot_reach_80_percent_power_says_so_before_training():
    ok = planned_power("c", [_verdict(primary=True, smallest_effect=0.1, expected_sd=0.02)], 5)
    short = planned_power("c", [_verdict(primary=True, smallest_effect=0.02, expected_sd=0.05)], 5)
    assert len(ok) == 1 and "reaches" in ok[0]
    need = power_analysis(0.05, 5, 0.05, 0.02)["seeds_needed"]
    assert short == [f"[power] c: the primary cannot reach 80% power at 5 seeds: 0.02 needs {need} seeds at sd 0.05; "
                     f"these seeds can see {power_analysis(0.05, 5, 0.05)['mde']:.3g} or more"]
    assert planned_power("c", [_verdict(smallest_effect=0.02, expected_sd=0.05)], 5) == []  # exploratory: silent


def _sweep(diverged_seeds):
    """A plan and rows for two arms x 5 seeds; arm 'a' diverged at ``diverged_seeds`` (no val loss)."""
    plan = {"experiments": {"e": {
        "description": "", "file": "e.toml", "groups": ["a", "b"], "seeds": list(range(5)), "min_seeds": 5,
        "runs": [{"arm": g, "group": g, "grid": {}, "seed": s, "folder": f"{g}{s}"} for g in "ab" for s in range(5)],
        "verdicts": [_verdict(metric="val_loss")]}}}
    rows = []
    for g, offset in (("a", 0.9), ("b", 1.0)):
        for s in range(5):
            row = {"experiment": "e", "arm": g, "group": g, "seed": s, "diverged": g == "a" and s in diverged_seeds,
                   "clipped_fraction": 0.01 * s}
            if not row["diverged"]:
                row["val_loss"] = offset + 0.01 * s
            rows.append(row)
    return summarise(plan, rows, {})["experiments"]["e"]


def test_divergence_is_counted_with_an_exact_interval_and_named_in_the_verdict():
    e = _sweep({1, 3})
    div = e["arms"]["a"]["divergence"]
    assert (div["k"], div["n"]) == (2, 5) and div["ci95"] == pytest.approx([0.05274, 0.85337], abs=1e-4)
    assert e["arms"]["b"]["divergence"]["k"] == 0
    (v,) = e["verdicts"]
    assert v["diverged_runs"] == ["a s1", "a s3"] and v["interval"]["n"] == 3
    assert v["verdict"].startswith("too few seeds (n = 3")  # the survivors alone do not decide
    assert _sweep(set())["verdicts"][0]["verdict"] == "supported"


def test_fractions_get_bounded_intervals_and_differences_are_arm_minus_baseline():
    e = _sweep(set())
    ci = e["arms"]["a"]["metrics"]["clipped_fraction"]["ci95"]
    assert 0.0 <= ci[0] and ci[1] <= 1.0
    assert e["paired_vs_reference"]["b"]["val_loss"]["mean"] == pytest.approx(0.1)  # b − a, a the reference
    assert e["verdicts"][0]["interval"]["mean"] == pytest.approx(-0.1)  # a − b


def test_a_learning_rate_ladder_reports_failure_rates_and_the_critical_lr():
    from prism_lm.experiments.report import _stability

    lrs = (0.01, 0.1, 1.0)
    exp = {"runs": [{"arm": a, "grid": {"optim.lr": lr}} for a in ("p", "g") for lr in lrs]}
    fails = {("p", 0.01): 0, ("p", 0.1): 1, ("p", 1.0): 5, ("g", 0.01): 0, ("g", 0.1): 4, ("g", 1.0): 5}
    rows = [{"arm": a, "optim.lr": lr, "seed": s, "failed": s < fails[a, lr]}
            for a in ("p", "g") for lr in lrs for s in range(5)]
    st = _stability(exp, rows)
    assert st["p"]["critical"] == 1.0 and st["g"]["critical"] == 0.1
    assert st["g"]["failure_by_lr"][0.1]["k"] == 4 and st["g"]["failure_by_lr"][0.1]["ci95"][0] > 0.2
    assert _stability({"runs": [{"arm": "p", "grid": {}}]}, rows) is None  # no lr grid, no stability table


def _gate(**kw):
    return {"name": "the baseline learns the recalls", "metric": "acc", "arm": "b", "above": 0.9, "below": None, **kw}


def _gated(acc_b, acc_a=None, **gate):
    rng = np.random.default_rng(4)
    base = rng.normal(1.0, 0.01, 6)
    groups = _groups(base - 0.1, base)
    groups["b"]["acc"] = dict(enumerate(acc_b))
    if acc_a is not None:
        groups["a"]["acc"] = dict(enumerate(acc_a))
    gates = gate_results([_gate(**gate)], groups)
    return gates[0], family([_verdict(primary=True), _verdict(claim="d")], groups, {}, 5, gates)


def test_a_passing_gate_lets_the_verdicts_be_decided():
    gate, (primary, _) = _gated([0.97, 0.98, 0.99, 0.96, 0.98, 0.97])
    assert gate["passed"] and primary["verdict"] == "supported" and primary["p_adjusted"] is not None


@pytest.mark.parametrize("acc, why", [
    ([0.2, 0.25, 0.3, 0.22, 0.27, 0.2], "wholly above 0.9"),    # the baseline never learns the recalls
    ([0.85, 0.99, 0.95, 0.99, 0.8, 0.99], "wholly above 0.9"),  # its mean is above, its interval is not
    ([], "not measured"),
])
def test_a_failed_gate_makes_every_verdict_untestable_never_inconclusive(acc, why):
    gate, entries = _gated(acc)
    assert not gate["passed"] and why in gate["reason"]
    for e in entries:
        assert e["verdict"] == "untestable in this regime: " + gate["reason"]
        assert e["p_adjusted"] is None and "inconclusive" not in e["verdict"]
    assert gate["reason"].startswith("the baseline learns the recalls: acc not wholly above 0.9 (b ")


def test_a_gate_over_several_arms_passes_when_any_one_does_and_below_bounds_work():
    low, high = [0.1, 0.12, 0.11, 0.1, 0.13, 0.12], [0.95, 0.96, 0.97, 0.95, 0.96, 0.97]
    assert _gated(low, high, arm=["b", "a"])[0]["passed"]
    assert not _gated(low, low, arm=["b", "a"])[0]["passed"]
    assert _gated(low, above=None, below=0.2)[0]["passed"]
    assert not _gated(high, above=None, below=0.2)[0]["passed"]


def test_a_paired_gate_decides_on_the_per_seed_difference_not_on_either_arm():
    """A control that a measure sees a known contrast (C4: resonant-by-construction arms above pi):
    two arms whose spreads overlap pass when the paired difference is consistently positive, and an
    offset that flips sign from seed to seed fails however high each arm is."""
    rng = np.random.default_rng(7)
    level = rng.normal(0.6, 0.1, 6)  # seed-to-seed spread shared by both arms
    groups = {"b": {"k": dict(enumerate(level))}, "a": {"k": dict(enumerate(level + 0.05))}}
    passed, = gate_results([_gate(metric="k", arm="a", baseline="b", above=0.0)], groups)
    assert passed["passed"] and list(passed["values"]) == ["a − b"]
    assert passed["values"]["a − b"]["mean"] == pytest.approx(0.05)
    assert passed["condition"] == "a − b: k wholly above 0"
    assert passed["reason"].startswith("the baseline learns the recalls: k wholly above 0 (a − b 0.05 [")
    flip = {"b": groups["b"], "a": {"k": {s: v + (0.05 if s % 2 else -0.04) for s, v in groups["b"]["k"].items()}}}
    failed, = gate_results([_gate(metric="k", arm="a", baseline="b", above=0.0)], flip)
    assert not failed["passed"]
    assert failed["reason"].startswith("the baseline learns the recalls: k not wholly above 0 (a − b ")
    unpaired, = gate_results([_gate(metric="k", arm="a", above=0.62)], groups)  # either arm alone: no
    assert not unpaired["passed"]


def test_a_run_ending_within_the_margin_of_the_unigram_entropy_failed():
    """PRISM at lr 3.0 ended at 4.54-4.57 against an entropy of 4.58: it learned nothing, and the
    rule (within FAILURE_MARGIN = 0.1 nat) now counts it; older rows are judged by today's rule."""
    from prism_lm.experiments.job import FAILURE_MARGIN, is_failure
    from prism_lm.experiments.report import _stability

    assert FAILURE_MARGIN == 0.1
    assert is_failure(False, 4.55, 4.58) and is_failure(True, 1.0, 4.58) and is_failure(False, None, 4.58)
    assert not is_failure(False, 4.40, 4.58)
    exp = {"runs": [{"arm": "p", "grid": {"optim.lr": lr}} for lr in (0.01, 3.0)], "evaluate": {"contexts": [128]}}
    rows = [{"arm": "p", "optim.lr": lr, "seed": s, "failed": False, "diverged": False, "unigram_entropy": 4.58,
             "val_loss_128": loss} for lr, loss in ((0.01, 1.2), (3.0, 4.55)) for s in range(3)]
    rows.append({"arm": "p", "optim.lr": 0.01, "seed": 9, "failed": True})  # no numbers: keeps its own flag
    st = _stability(exp, rows)["p"]
    assert st["failure_by_lr"][3.0]["k"] == 3 and st["failure_by_lr"][0.01]["k"] == 1 and st["critical"] == 3.0


def test_a_measure_that_never_varies_is_named_and_leaves_the_family():
    """Every seed exactly at the null in both arms (no run spikes): "no variation", not tested, not
    "inconclusive [0, 0]"; it leaves the Holm family, so the other verdict's p is its own."""
    zeros, a = np.zeros(5), np.array([0.3, 0.5, 0.2, 0.6, 0.4])
    groups = {"a": {"m": dict(enumerate(zeros)), "n": dict(enumerate(a))},
              "b": {"m": dict(enumerate(zeros)), "n": dict(enumerate(a - 0.1 - a / 10))}}
    entries = family([_verdict(), _verdict(claim="d", metric="n")], groups, {}, 5)
    assert entries[0]["verdict"].startswith("no variation: every seed's paired difference is exactly 0")
    assert entries[0]["p_adjusted"] is None and entries[0]["power"]["mde"] is None
    assert entries[1]["family_size"] == 1 and entries[1]["p_adjusted"] == pytest.approx(entries[1]["p"])
    hand = stats.ttest_1samp(a - (a - 0.1 - a / 10), 0.0).pvalue
    assert entries[1]["p"] == pytest.approx(hand)
    constant_gap = family([_verdict()], {"a": {"m": dict(enumerate(zeros + 1))}, "b": {"m": dict(enumerate(zeros))}},
                          {}, 5)
    assert constant_gap[0]["verdict"] == "contradicted"  # every seed 1 higher: a spread of 0 away from the null


def test_an_inconclusive_difference_says_when_its_interval_rules_out_the_smallest_effect():
    """Hand values: a higher-is-better difference whose interval [lo, hi] ends below the declared
    smallest effect rules it out; one reaching past it does not; nothing declared, nothing said."""
    diffs = np.array([0.01, -0.02, 0.03, 0.0, 0.015, -0.005])
    m, se, df = _hand_t(diffs)
    hi = m + stats.t.ppf(0.975, df) * se
    groups = {"a": {"m": dict(enumerate(diffs))}, "b": {"m": dict(enumerate(np.zeros(6)))}}
    small, large = (family([_verdict(better="higher", primary=True, smallest_effect=e)], groups, {}, 5)[0]["verdict"]
                    for e in (hi - 0.001, hi + 0.001))
    assert small == f"inconclusive: the interval allows {m - (hi - m):.3g} to {hi:.3g}"
    assert large.endswith(f", which rules out the smallest effect of interest ({hi + 0.001:g}) on the claimed side")
    lower = family([_verdict(better="lower", primary=True, smallest_effect=0.05)], groups, {}, 5)[0]["verdict"]
    assert lower.endswith("rules out the smallest effect of interest (0.05) on the claimed side")  # lo > -0.05
    assert "rules out" not in family([_verdict(primary=True)], groups, {}, 5)[0]["verdict"]
