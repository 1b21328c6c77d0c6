"""Verdict rules on synthetic seed-level numbers: Holm within a claim, TOST, the minimum-seed
refusal, divergence accounting, one sign convention."""

import numpy as np
import pytest

from prism_lm.experiments.report import summarise
from prism_lm.experiments.verdicts import decide, family


def _verdict(**kw):
    return {"claim": "c", "metric": "m", "arm": "a", "baseline": "b", "null": 0.0, "better": "lower", **kw}


def _groups(a, b):
    return {"a": {"m": dict(enumerate(a))}, "b": {"m": dict(enumerate(b))}}


def test_a_difference_is_decided_by_its_holm_adjusted_p_and_its_side():
    rng = np.random.default_rng(1)
    b = rng.normal(1.0, 0.01, 6)
    lower = family([_verdict()], _groups(b - 0.1, b), {}, 5)[0]
    assert lower["verdict"] == "supported" and lower["interval"]["mean"] == pytest.approx(-0.1, abs=0.01)
    higher = family([_verdict()], _groups(b + 0.1, b), {}, 5)[0]
    assert higher["verdict"] == "contradicted"  # arm − baseline > 0 where lower supports
    noisy = family([_verdict()], _groups(b + rng.normal(0, 0.5, 6), b), {}, 5)[0]
    assert noisy["verdict"].startswith("inconclusive: the interval allows ") and "equal" not in noisy["verdict"]


def test_holm_across_the_verdicts_of_a_claim_can_undo_a_raw_decision():
    """Two verdicts with raw p just under 0.05: alone each is decided, together Holm keeps neither."""
    b = np.ones(5)
    a = b + np.array([-0.20, -0.10, -0.15, 0.0, -0.25])  # t = 3.25 on 4 df: raw p 0.031, twice that 0.063
    single = family([_verdict()], _groups(a, b), {}, 5)[0]
    assert single["p"] < 0.05 and single["p_holm"] == pytest.approx(single["p"]) and single["verdict"] == "supported"
    both = family([_verdict(), _verdict(claim="d")], _groups(a, b), {}, 5)
    assert [e["p_holm"] for e in both] == pytest.approx([min(1.0, 2 * single["p"])] * 2)
    assert all(e["verdict"].startswith("inconclusive") for e in both) and both[0]["family_size"] == 2


def test_equivalence_is_a_claim_of_its_own():
    rng = np.random.default_rng(2)
    b = rng.normal(1.0, 0.05, 8)
    eq = _verdict(test="equivalence", margin=0.02)
    assert family([eq], _groups(b + rng.normal(0, 0.002, 8), b), {}, 5)[0]["verdict"].startswith(
        "supported: equivalent within ±0.02")
    assert family([eq], _groups(b + 0.1 + rng.normal(0, 0.002, 8), b), {}, 5)[0]["verdict"].startswith("contradicted")
    assert family([eq], _groups(b + rng.normal(0, 0.05, 8), b), {}, 5)[0]["verdict"].startswith("inconclusive")


def test_too_few_seeds_decide_nothing_and_leave_the_family():
    b = np.ones(3)
    entries = family([_verdict(), _verdict(claim="d", arm="b", baseline=None)],
                     {"a": {"m": dict(enumerate(b - 1))}, "b": {"m": {0: 1.0, 1: 1.0, 2: 1.1, 3: 1.0, 4: 1.05}}},
                     {}, 5)
    assert entries[0]["verdict"] == "too few seeds (n = 3; at least 5 decide)" and entries[0]["p_holm"] is None
    assert entries[1]["family_size"] == 1 and entries[1]["p_holm"] == pytest.approx(entries[1]["p"])
    assert decide({"interval": {"n": 0}, "metric": "m"}, None).startswith("not measured")


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
