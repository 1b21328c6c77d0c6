"""Verdicts: each claim's pre-registered test, decided from seed-level numbers, corrected for the
other tests of its claim.

Rules (stated in every report, tested in ``tests/experiments/test_verdicts.py``):
- **One family per claim** (an experiment file). Every verdict of the family gets a p: a two-sided
  one-sample t test of the per-seed differences (arm − baseline, paired by seed; or the arm's
  values against ``null``) for ``test = "difference"``, the two one-sided tests (TOST) against
  ± ``margin`` for ``test = "equivalence"``. The p are Holm-adjusted within the family (statsmodels).
  The verdict marked ``primary`` is the claim's pre-registered one; the others are exploratory.
- **Decisions**: a difference is *supported* (adjusted p < 0.05, on the claimed side) or
  *contradicted* (adjusted p < 0.05, on the other side); an equivalence is *supported* (adjusted TOST
  p < 0.05) or *contradicted* (the whole 95% interval beyond the margin). Anything else is
  *inconclusive*, written with the range its interval allows, never as "equal".
- **Too few seeds**: below the file's ``min_seeds`` paired seeds (default 5) a verdict says so and
  decides nothing; it takes no part in the Holm family.
- **Divergence is data**: a run that diverged has no evaluation; every verdict names the diverged
  runs of its arm and baseline instead of dropping them silently, and the arms table gives each
  arm's divergence rate with an exact binomial interval.
"""

from __future__ import annotations

from prism_lm.stats import ALPHA, holm, mean_interval, paired_difference, tost_p

VERDICT_RULES = ("Holm–Bonferroni within each claim (experiment file); difference: two-sided t test of the "
                 "per-seed differences (arm − baseline); equivalence: two one-sided t tests (TOST) against "
                 "± margin; below min_seeds paired seeds: no decision; inconclusive is not 'equal'")


DECISION_WORDS = {
    "supported": "the Holm-adjusted p is below 0.05 and the difference lies on the claimed side (an "
                 "equivalence: the adjusted TOST p is below 0.05, the difference within ± margin)",
    "contradicted": "the Holm-adjusted p is below 0.05 on the other side (an equivalence: the whole 95% "
                    "interval lies beyond the margin)",
    "inconclusive": "neither: the data allow both readings, and the range the interval allows is printed; "
                    "it does not mean 'equal'",
    "too few seeds": "fewer paired seeds than the file's min_seeds: no test, no part in the Holm family",
    "not measured": "no run produced the metric (not run yet, or every run diverged)",
}


def verdict_defaults(v: dict) -> dict:
    """A plan's verdict with the keys that older plans did not record."""
    return {"primary": False, "test": "difference", "margin": None, "null": 0.0, "better": "lower", **v}


def family(verdicts: list[dict], by_group: dict, diverged: dict[str, list[int]], min_seeds: int) -> list[dict]:
    """Every verdict of one claim with its interval, raw and Holm-adjusted p and decision."""
    entries = [_measure(verdict_defaults(v), by_group, diverged) for v in verdicts]
    testable = [e["p"] if e["interval"]["n"] >= min_seeds else None for e in entries]
    for e, p_holm in zip(entries, holm(testable), strict=True):
        e["p_holm"] = p_holm
        e["family_size"] = sum(p is not None for p in testable)
        e["verdict"] = decide(e, p_holm, min_seeds)
    return entries


def _measure(v: dict, by_group: dict, diverged: dict[str, list[int]]) -> dict:
    a = by_group[v["arm"]].get(v["metric"], {})
    if v["baseline"]:
        interval = paired_difference(a, by_group[v["baseline"]].get(v["metric"], {}), v["null"])
        values = [a[s] - by_group[v["baseline"]][v["metric"]][s] for s in interval["seeds"]]
    else:
        interval = mean_interval(list(a.values()), v["null"])
        values = list(a.values())
    p = tost_p(values, v["margin"], v["null"]) if v["test"] == "equivalence" else interval["p"]
    runs = [f"{g} s{s}" for g in filter(None, (v["arm"], v["baseline"])) for s in diverged.get(g, [])]
    return {**v, "interval": interval, "p": p, "diverged_runs": runs}


def decide(entry: dict, p_holm: float | None, min_seeds: int = 2) -> str:
    """The decision for one measured verdict (see the module's rules)."""
    interval, n = entry["interval"], entry["interval"]["n"]
    if n == 0:
        return f"not measured (no run has {entry['metric']})"
    if n < min_seeds or interval["ci95"] is None:
        return f"too few seeds (n = {n}; at least {min_seeds} decide)"
    lo, hi = interval["ci95"]
    null = entry.get("null", 0.0)
    allows = f"inconclusive: the interval allows {lo:.3g} to {hi:.3g}"
    if entry.get("test", "difference") == "equivalence":
        margin = entry["margin"]
        if p_holm is not None and p_holm < ALPHA:
            return f"supported: equivalent within ±{margin:g}"
        if lo > null + margin or hi < null - margin:
            return f"contradicted: the difference exceeds the margin ±{margin:g}"
        return allows
    if p_holm is not None and p_holm < ALPHA:
        on_lower_side = interval["mean"] < null
        return "supported" if on_lower_side == (entry.get("better", "lower") == "lower") else "contradicted"
    return allows
