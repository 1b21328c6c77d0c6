"""Verdicts: each claim's pre-registered primary tested alone at α; its exploratory verdicts
corrected among themselves; every decision read from seed-level numbers.

Rules (stated in every report, tested against hand values in ``tests/experiments/test_verdicts.py``):
- **The primary stands alone.** The verdict marked ``primary`` is the claim's pre-registered test: its
  p is compared with α = 0.05 unadjusted, whatever else the file asks. Adding or removing exploratory
  verdicts can never move it.
- **Exploratory verdicts form their own family**: their p are Holm-adjusted among themselves
  (statsmodels), never together with the primary.
- **Tests**: a difference is a two-sided one-sample t test of the per-seed differences (arm −
  baseline, paired by seed; or the arm's values against ``null``). An equivalence is decided by one
  rule both ways: p = 2 · min(TOST p, beyond-margin p) (``stats.equivalence_p``), so that, before any
  adjustment, it is *supported* exactly when the 95% t interval lies inside ± ``margin`` and
  *contradicted* exactly when it lies wholly beyond the margin; adjusted, the same p decides both.
- **Decisions**: a difference is *supported* (adjusted p < α, on the claimed side) or *contradicted*
  (adjusted p < α, on the other side). Anything else is *inconclusive*, written with the range its
  interval allows, never as "equal".
- **Power**: a verdict may declare ``smallest_effect`` (for an equivalence, its margin); every verdict
  reports the minimum detectable difference at the observed seed spread (80% power, at α for the
  primary, at α / k for one of k exploratory verdicts, Holm's first step) and the seeds its smallest
  effect needs (``power_analysis``).
- **A verdict only where the mechanism can show**: a file's ``[[gates]]`` are positive controls on its
  own sweep (an arm's metric, its 95% t interval over seeds wholly above or below a bound; a list of
  arms passes if any one does). If a gate fails or is not measured, every verdict of the file reads
  "untestable in this regime: <gate> (<numbers>)", never inconclusive, and none is tested.
- **Too few seeds**: below the file's ``min_seeds`` paired seeds (default 5) a verdict says so and
  decides nothing; it takes no part in any family.
- **No variation**: when every seed gives exactly the null (e.g. no run of either arm ever spikes), the
  measure cannot tell the arms apart in this regime: the verdict says so, is not tested and takes no
  part in any family (a t test of a spread of 0 has no p; "inconclusive [0, 0]" would hide it).
- **Divergence is data**: a run that diverged has no evaluation; every verdict names the diverged
  runs of its arm and baseline instead of dropping them silently.
"""

from __future__ import annotations

from prism_lm.experiments.columns import bounded
from prism_lm.stats import (
    ALPHA,
    MAX_SEEDS_SEARCHED,
    POWER,
    bounded_mean_interval,
    equivalence_p,
    holm,
    mean_interval,
    paired_difference,
    power_analysis,
)

VERDICT_RULES = ("the primary tested alone at α = 0.05; exploratory verdicts Holm-adjusted among themselves; "
                 "difference: two-sided t test of the per-seed differences (arm − baseline); equivalence: "
                 "p = 2·min(TOST p, beyond-margin p), i.e. the 95% interval inside ± margin supports, wholly "
                 "beyond it contradicts; below min_seeds paired seeds: no decision; inconclusive is not 'equal'")

DECISION_WORDS = {
    "supported": "the decision p (the primary's own, an exploratory's Holm-adjusted) is below 0.05 and the "
                 "difference lies on the claimed side (an equivalence: the interval lies inside ± margin)",
    "contradicted": "the decision p is below 0.05 on the other side (an equivalence: the interval lies wholly "
                    "beyond the margin)",
    "inconclusive": "neither: the data allow both readings, and the range the interval allows is printed; "
                    "it does not mean 'equal'",
    "too few seeds": "fewer paired seeds than the file's min_seeds: no test, no part in any family",
    "no variation": "every seed gave exactly the null (the arms' values equal on every seed): the measure "
                    "cannot tell the arms apart in this regime; no test, no part in any family",
    "not measured": "no run produced the metric (not run yet, or every run diverged)",
    "untestable in this regime": "the claim's positive control (its gate) failed in this sweep: the phenomenon "
                                 "could not show, so no verdict of the claim is decided",
}


def verdict_defaults(v: dict) -> dict:
    """A plan's verdict with the keys that older plans did not record."""
    return {"primary": False, "test": "difference", "margin": None, "null": 0.0, "better": "lower",
            "smallest_effect": None, "expected_sd": None, **v}


def verdict_effect(v: dict) -> float | None:
    """The effect a verdict's power is sized for: an equivalence's margin, a difference's
    ``smallest_effect`` (None: it declares none)."""
    return v["margin"] if v["test"] == "equivalence" else v["smallest_effect"]


def declared_power(v: dict, seeds: int) -> dict:
    """``power_analysis`` at ``seeds`` seeds of a verdict's own numbers: its effect
    (``verdict_effect``) at the spread an earlier table measured (``expected_sd``), at α."""
    return power_analysis(v["expected_sd"], seeds, ALPHA, verdict_effect(v), v["test"])


def planned_power(name: str, verdicts: list, seeds: int) -> list[str]:
    """Before training: for each primary that states ``smallest_effect`` and ``expected_sd``, whether
    ``seeds`` seeds reach 80% power at α, and if not, the seeds it needs and the effect it can see."""
    lines = []
    for v in (verdict_defaults(vars(v) if not isinstance(v, dict) else v) for v in verdicts):
        if not v["primary"] or v["smallest_effect"] is None or v["expected_sd"] is None:
            continue
        effect, pw = verdict_effect(v), declared_power(v, seeds)
        if pw["power"] is not None and pw["power"] >= POWER:
            lines.append(f"[power] {name}: the primary reaches {pw['power']:.0%} power at {seeds} seeds for "
                         f"{effect:g} (minimum detectable {pw['mde']:.3g} at sd {v['expected_sd']:g})")
        else:
            lines.append(f"[power] {name}: the primary cannot reach 80% power at {seeds} seeds: {effect:g} needs "
                         f"{seeds_needed_words(pw)} seeds at sd {v['expected_sd']:g}; these seeds can see "
                         f"{pw['mde']:.3g} or more")
    return lines


def seeds_needed_words(power: dict) -> str:
    return f"more than {MAX_SEEDS_SEARCHED}" if power["seeds_needed"] is None else str(power["seeds_needed"])


def gate_results(gates: list[dict], by_group: dict) -> list[dict]:
    """Each gate with each of its arms' interval, whether it passed, and why in words (the numbers that
    passed it or failed it)."""
    out = []
    for g in gates:
        arms = [g["arm"]] if isinstance(g["arm"], str) else list(g["arm"])
        side, bound = ("above", g["above"]) if g.get("above") is not None else ("below", g["below"])
        values = _gate_values(g, arms, by_group)
        passed = any(_holds(iv, side, bound) for iv in values.values())
        numbers = "; ".join(f"{a} {interval_words(iv)}" for a, iv in values.items())
        held = "wholly" if passed else "not wholly"
        out.append({**g, "values": values, "passed": passed,
                    "condition": f"{' or '.join(values)}: {g['metric']} wholly {side} {bound:g}",
                    "reason": f"{g['name']}: {g['metric']} {held} {side} {bound:g} ({numbers})"})
    return out


def _gate_values(g: dict, arms: list[str], by_group: dict) -> dict[str, dict]:
    """Each arm's interval of the gate's metric, or, with a baseline, of arm − baseline paired by seed
    (keyed "arm − baseline")."""
    def seeds_of(arm: str) -> dict:
        return by_group.get(arm, {}).get(g["metric"], {})

    if g.get("baseline"):
        return {f"{a} − {g['baseline']}": paired_difference(seeds_of(a), seeds_of(g["baseline"])) for a in arms}
    interval = bounded_mean_interval if bounded(g["metric"]) else mean_interval  # as the arm tables print it
    return {a: interval(list(seeds_of(a).values())) for a in arms}


def _holds(iv: dict, side: str, bound: float) -> bool:
    """The whole 95% interval lies on ``side`` of ``bound`` (no interval: it does not)."""
    return iv["ci95"] is not None and (iv["ci95"][0] > bound if side == "above" else iv["ci95"][1] < bound)


def interval_words(iv: dict) -> str:
    if iv["n"] == 0:
        return "not measured"
    if iv["ci95"] is None:
        return f"{iv['mean']:.4g} (n = 1, no interval)"
    return f"{iv['mean']:.4g} [{iv['ci95'][0]:.4g}, {iv['ci95'][1]:.4g}], n = {iv['n']}"


def family(verdicts: list[dict], by_group: dict, diverged: dict[str, list[int]], min_seeds: int,
           gates: list[dict] = ()) -> list[dict]:
    """Every verdict of one claim with its interval, raw and decision p, power and decision; all
    "untestable in this regime" when a gate failed (``gates``: ``gate_results``' entries)."""
    failed = [g["reason"] for g in gates if not g["passed"]]
    if failed:
        return [{**_measure(verdict_defaults(v), by_group, diverged), "p_adjusted": None, "family_size": 0,
                 "adjustment": "none: untestable", "power": power_analysis(None, 0, ALPHA),
                 "verdict": "untestable in this regime: " + "; ".join(failed)} for v in verdicts]
    entries = [_measure(verdict_defaults(v), by_group, diverged) for v in verdicts]
    testable = [e["p"] if e["interval"]["n"] >= min_seeds and not _no_variation(e) else None for e in entries]
    exploratory = [None if e["primary"] else p for e, p in zip(entries, testable, strict=True)]
    k = sum(p is not None for p in exploratory)
    for e, p, p_holm in zip(entries, testable, holm(exploratory), strict=True):
        if e["primary"]:
            e["p_adjusted"], e["adjustment"], e["family_size"] = p, "none: the primary, tested alone at α", 1
        else:
            e["p_adjusted"], e["family_size"] = p_holm, k
            e["adjustment"] = f"Holm over the {k} tested exploratory verdicts"
        alpha = ALPHA if e["primary"] else ALPHA / max(k, 1)
        e["power"] = (power_analysis(None, 0, alpha) if _no_variation(e)
                      else power_analysis(e["sd"], e["interval"]["n"], alpha, verdict_effect(e), e["test"]))
        e["verdict"] = decide(e, e["p_adjusted"], min_seeds)
    return entries


def _measure(v: dict, by_group: dict, diverged: dict[str, list[int]]) -> dict:
    a = by_group[v["arm"]].get(v["metric"], {})
    if v["baseline"]:
        interval = paired_difference(a, by_group[v["baseline"]].get(v["metric"], {}), v["null"])
        values = [a[s] - by_group[v["baseline"]][v["metric"]][s] for s in interval["seeds"]]
    else:
        interval = mean_interval(list(a.values()), v["null"])
        values = list(a.values())
    p, side = (equivalence_p(values, v["margin"], v["null"]) if v["test"] == "equivalence"
               else (interval["p"], None))
    runs = [f"{g} s{s}" for g in filter(None, (v["arm"], v["baseline"])) for s in diverged.get(g, [])]
    sd = _spread(values)
    return {**v, "interval": interval, "p": p, "equivalence_side": side, "sd": sd, "diverged_runs": runs}


def _below_smallest_effect(entry: dict, lo: float, hi: float) -> str:
    """For an inconclusive difference with a declared ``smallest_effect``: whether its interval rules out
    an effect that large on the claimed side (a bound, not a finding of "no difference")."""
    effect = entry.get("smallest_effect")
    if entry.get("test", "difference") != "difference" or effect is None:
        return ""
    null, higher = entry.get("null", 0.0), entry.get("better", "lower") == "higher"
    if (hi < null + effect) if higher else (lo > null - effect):
        return f", which rules out the smallest effect of interest ({effect:g}) on the claimed side"
    return ""


def _no_variation(entry: dict) -> bool:
    """Every seed gave exactly the null: a spread of 0 at the null (see the module's rules)."""
    iv = entry["interval"]
    return entry["sd"] == 0.0 and iv["ci95"] is not None and iv["mean"] == entry.get("null", 0.0)


def _spread(values: list[float]) -> float | None:
    import numpy as np

    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def decide(entry: dict, p_adjusted: float | None, min_seeds: int = 2) -> str:
    """The decision for one measured verdict (see the module's rules)."""
    interval, n = entry["interval"], entry["interval"]["n"]
    if n == 0:
        return f"not measured (no run has {entry['metric']})"
    if n < min_seeds or interval["ci95"] is None:
        return f"too few seeds (n = {n}; at least {min_seeds} decide)"
    if _no_variation(entry):
        what = "paired difference" if entry.get("baseline") else "value"
        return (f"no variation: every seed's {what} is exactly {interval['mean']:g}; the measure cannot tell "
                "the arms apart in this regime (not tested)")
    lo, hi = interval["ci95"]
    allows = f"inconclusive: the interval allows {lo:.3g} to {hi:.3g}"
    if p_adjusted is None or p_adjusted >= ALPHA:
        return allows + _below_smallest_effect(entry, lo, hi)
    if entry.get("test", "difference") == "equivalence":
        margin = entry["margin"]
        if entry.get("equivalence_side") == "within":
            return f"supported: equivalent within ±{margin:g}"
        return f"contradicted: the difference exceeds the margin ±{margin:g}"
    on_lower_side = interval["mean"] < entry.get("null", 0.0)
    return "supported" if on_lower_side == (entry.get("better", "lower") == "lower") else "contradicted"
