"""Intervals, in one place: seed-level t intervals and the bootstraps over heads and over seeds.

Two kinds of sample meet in prism-lm's reports, and every interval says which it resampled:
- **runs (seeds)**: each run one sample. ``mean_interval`` is the 95% Student-t interval of the
  mean over runs; ``paired_difference`` the same for per-seed differences of two arms.
  ``hierarchical_bootstrap_diff`` resamples runs, then heads within each layer of each run.
- **heads of one model**: ``bootstrap_diff`` resamples heads (within layers when given strata). It
  says how the heads of this one model vary, not how another seed would.
"""

from __future__ import annotations

import functools
import math

import numpy as np

ALPHA = 0.05
T_METHOD = "95% Student-t interval of the mean over seeds (each run one sample, n - 1 degrees of freedom)"
BOUNDED_METHOD = ("95% Student-t interval on the logit scale, mapped back (per-seed values clamped to [ε, 1 − ε], "
                  "ε = 1e-3, a bound reached maps back to 0 or 1; widened where needed to hold the mean), so it stays "
                  "inside [0, 1]")
BINOMIAL_METHOD = "exact (Clopper–Pearson) 95% binomial interval"


@functools.lru_cache(maxsize=256)
def t_quantile(df: int, confidence: float = 0.95) -> float:
    """The two-sided Student-t quantile t_{(1 + confidence)/2, df} (scipy; one call per df: a sweep
    report asks for thousands of intervals over a handful of seed counts)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, df)) if df >= 1 else math.nan


def _finite_array(values) -> np.ndarray:
    return np.array([v for v in values if v is not None and finite(v)], float)


def mean_interval(values, null: float = 0.0) -> dict:
    """Mean, 95% t interval, n and the two-sided p of "mean = null" (one-sample t test) of the finite values."""
    x = _finite_array(values)
    if len(x) == 0:
        return {"mean": None, "ci95": None, "n": 0, "p": None}
    if len(x) == 1:
        return {"mean": float(x[0]), "ci95": None, "n": 1, "p": None}
    m, sd = float(x.mean()), float(x.std(ddof=1))
    half = t_quantile(len(x) - 1) * sd / math.sqrt(len(x))
    return {"mean": m, "ci95": [m - half, m + half], "n": len(x), "p": _t_test_p(x, null)}


def _t_test_p(x: np.ndarray, null: float) -> float:
    """Two-sided one-sample t-test p; a spread of 0 gives p 0 (any difference) or 1 (none)."""
    from scipy import special

    if _constant(x):
        return 0.0 if float(x.mean()) != null else 1.0
    # scipy's ttest_1samp, written out: its input checks cost a millisecond a call, and a report makes thousands
    t = (float(x.mean()) - null) / (float(x.std(ddof=1)) / math.sqrt(len(x)))
    return float(2.0 * special.stdtr(len(x) - 1, -abs(t)))


def _constant(x: np.ndarray) -> bool:
    """No spread beyond rounding (every seed gave the same number)."""
    return float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.abs(x).max()))


def bounded_mean_interval(values, eps: float = 1e-3) -> dict:
    """Mean and 95% interval of per-seed fractions in [0, 1], computed on the logit scale so that it
    stays inside (0, 1) (``BOUNDED_METHOD``)."""
    x = _finite_array(values)
    out = mean_interval(x)
    if len(x) < 2:
        return out
    clamped = np.clip(x, eps, 1 - eps)
    z = np.log(clamped / (1 - clamped))
    half = t_quantile(len(z) - 1) * float(z.std(ddof=1)) / math.sqrt(len(z))
    lo, hi = (1.0 / (1.0 + math.exp(-v)) for v in (float(z.mean()) - half, float(z.mean()) + half))
    lo, hi = (_unclamp(v, eps) for v in (lo, hi))
    return {**out, "ci95": [min(lo, out["mean"]), max(hi, out["mean"])], "method": BOUNDED_METHOD}


def _unclamp(v: float, eps: float) -> float:
    """A bound at or beyond the clamp maps back to the boundary it stands for."""
    return 0.0 if v <= eps * (1 + 1e-9) else 1.0 if v >= 1 - eps * (1 + 1e-9) else v


def paired_difference(a: dict[int, float], b: dict[int, float], null: float = 0.0) -> dict:
    """a minus b over the seeds both hold (dicts seed -> value)."""
    seeds = sorted(s for s in set(a) & set(b) if finite(a[s]) and finite(b[s]))
    return {**mean_interval([a[s] - b[s] for s in seeds], null), "seeds": seeds}


def tost_p(values, margin: float, null: float = 0.0) -> float | None:
    """p of the two one-sided t tests that the mean lies within null ± margin (statsmodels'
    ``ttost_paired`` against the constant null): small when the values show equivalence."""
    from statsmodels.stats.weightstats import ttost_paired

    x = _finite_array(values)
    if len(x) < 2:
        return None
    if _constant(x):
        return 0.0 if abs(float(x.mean()) - null) < margin else 1.0
    return float(ttost_paired(x, np.full_like(x, null), -margin, margin)[0])


def exceed_p(values, margin: float, null: float = 0.0) -> float | None:
    """One-sided t-test p that the mean lies beyond ``null ± margin`` on the side where the values'
    mean lies (H0: |mean − null| ≤ margin on that side; scipy's ``ttest_1samp``)."""
    from scipy import stats

    x = _finite_array(values)
    if len(x) < 2:
        return None
    above = float(x.mean()) >= null
    bound = null + margin if above else null - margin
    if _constant(x):
        return 0.0 if (float(x.mean()) > bound if above else float(x.mean()) < bound) else 1.0
    return float(stats.ttest_1samp(x, bound, alternative="greater" if above else "less").pvalue)


def equivalence_p(values, margin: float, null: float = 0.0) -> tuple[float | None, str | None]:
    """The one rule that decides an equivalence both ways, as a two-sided test decides a difference:
    p = 2 · min(TOST p, beyond-margin p), capped at 1, with the side it speaks for ("within" or
    "beyond"). Unadjusted, p < α holds exactly when the (1 − α) t interval lies inside ± margin
    (within) or wholly beyond it (beyond)."""
    within, beyond = tost_p(values, margin, null), exceed_p(values, margin, null)
    if within is None or beyond is None:
        return None, None
    return (min(1.0, 2 * within), "within") if within <= beyond else (min(1.0, 2 * beyond), "beyond")


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p (statsmodels' step-down), over the p that are not None."""
    from statsmodels.stats.multitest import multipletests

    tested = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    if tested:
        adjusted = multipletests([pvalues[i] for i in tested], alpha=ALPHA, method="holm")[1]
        for i, p in zip(tested, adjusted, strict=True):
            out[i] = float(p)
    return out


POWER = 0.8
POWER_METHOD = ("80% power of the two-sided one-sample t test of the per-seed differences at the verdict's α "
                "(statsmodels' TTestPower) and the observed seed spread; an equivalence: the margin whose 95% "
                "interval test passes with 80% power when the true difference is 0, (t_{1-α/2} + t_{0.9})·sd/√n")
MAX_SEEDS_SEARCHED = 10_000


def power_analysis(sd: float | None, n: int, alpha: float, smallest_effect: float | None = None,
                   test: str = "difference") -> dict:
    """What ``n`` seeds can see at a per-seed spread ``sd``: the minimum detectable difference (80%
    power at ``alpha``), and, given the smallest effect of interest (an equivalence: its margin), the
    power there and the seeds that reach 80% (None: beyond ``MAX_SEEDS_SEARCHED``)."""
    out = {"sd": sd, "n": n, "alpha": alpha, "smallest_effect": smallest_effect, "mde": None, "power": None,
           "seeds_needed": None, "method": POWER_METHOD}
    if sd is None or not finite(sd) or n < 2:
        return out
    if sd <= 0:
        return {**out, "mde": 0.0, "power": None if smallest_effect is None else 1.0, "seeds_needed": 2}
    mde, power = (_equivalence_margin, _equivalence_power) if test == "equivalence" else (_difference_mde,
                                                                                        _difference_power)
    out["mde"] = mde(sd, n, alpha)
    if smallest_effect is not None:
        effect = abs(smallest_effect)
        out["power"] = power(sd, n, alpha, effect)
        out["seeds_needed"] = smallest_n(lambda k: mde(sd, k, alpha) <= effect)
    return out


def _difference_mde(sd: float, n: int, alpha: float) -> float:
    from statsmodels.stats.power import TTestPower

    return float(TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=POWER,
                                          alternative="two-sided")) * sd


def _difference_power(sd: float, n: int, alpha: float, effect: float) -> float:
    from statsmodels.stats.power import TTestPower

    return float(TTestPower().power(effect_size=effect / sd, nobs=n, alpha=alpha, alternative="two-sided"))


def _equivalence_margin(sd: float, n: int, alpha: float) -> float:
    from scipy import stats

    return float((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(0.5 + POWER / 2, n - 1)) * sd / math.sqrt(n))


def _equivalence_power(sd: float, n: int, alpha: float, margin: float) -> float:
    """P(the 1 − α interval lies inside ± margin) when the true difference is 0 (the same approximation)."""
    from scipy import stats

    slack = margin * math.sqrt(n) / sd - stats.t.ppf(1 - alpha / 2, n - 1)
    return max(0.0, float(2 * stats.t.cdf(slack, n - 1) - 1))


def smallest_n(enough, start: int = 2, limit: int = MAX_SEEDS_SEARCHED) -> int | None:
    """The smallest n ≥ ``start`` with ``enough(n)`` (monotone in n), or None up to ``limit``."""
    lo, hi = start - 1, start
    while not enough(hi):
        lo, hi = hi, hi * 2
        if hi > limit:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def binomial_interval(k: int, n: int) -> dict:
    """k of n with its exact (Clopper–Pearson) 95% interval (scipy)."""
    from scipy import stats

    if n == 0:
        return {"k": 0, "n": 0, "rate": None, "ci95": None, "method": BINOMIAL_METHOD}
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return {"k": k, "n": n, "rate": k / n, "ci95": [float(ci.low), float(ci.high)], "method": BINOMIAL_METHOD}


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _interval(diffs: np.ndarray, point: float, mean_a: float, mean_b: float) -> dict:
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": point, "ci95": [float(lo), float(hi)], "mean_a": mean_a, "mean_b": mean_b}


def bootstrap_diff(a: np.ndarray, b: np.ndarray, reps: int = 2000, seed: int = 0, strata_a=None,
                   strata_b=None) -> dict:
    """Mean of a minus mean of b with a 95% percentile bootstrap interval over heads.

    With ``strata_a``/``strata_b`` (each head's layer) heads are resampled within their layer.
    """
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, float), np.asarray(b, float)
    sa = np.zeros(len(a), int) if strata_a is None else np.asarray(strata_a)
    sb = np.zeros(len(b), int) if strata_b is None else np.asarray(strata_b)
    diffs = _resampled_means(a, sa, reps, rng) - _resampled_means(b, sb, reps, rng)
    return _interval(diffs, float(a.mean() - b.mean()), float(a.mean()), float(b.mean()))


def _resampled_means(x: np.ndarray, strata: np.ndarray, reps: int, rng) -> np.ndarray:
    """(reps,) means of ``x`` resampled with replacement within each stratum (all draws at once)."""
    total = np.zeros(reps)
    for s in np.unique(strata):
        xs = x[strata == s]
        total += xs[rng.integers(0, len(xs), (reps, len(xs)))].sum(1)
    return total / len(x)


def hierarchical_bootstrap_diff(runs: list[list[dict]], metric: str, a: str, b: str, reps: int = 2000,
                                seed: int = 0) -> dict:
    """Stream a minus stream b of ``metric`` over several runs (seeds), each a list of head entries
    (``head_statistics(...)["heads"]``): resample runs, then heads within each layer of each run."""
    if not runs:
        raise ValueError("no runs to combine")
    rng = np.random.default_rng(seed)

    def values(run, stream):
        entries = [e for e in run if e["stream"] == stream]
        return np.array([e[metric] for e in entries], float), np.array([e["layer"] for e in entries])

    tables = [(values(r, a), values(r, b)) for r in runs]

    # each run's stream difference under `reps` within-layer resamplings of its heads: (runs, reps)
    per_run = np.stack([_resampled_means(*ta, reps, rng) - _resampled_means(*tb, reps, rng) for ta, tb in tables])
    point = float(np.mean([ta[0].mean() - tb[0].mean() for ta, tb in tables]))
    picks = rng.integers(0, len(tables), (reps, len(tables)))  # the runs drawn for each replicate
    diffs = per_run[picks, np.arange(reps)[:, None]].mean(1)
    mean_a = float(np.mean([t[0][0].mean() for t in tables]))
    mean_b = float(np.mean([t[1][0].mean() for t in tables]))
    return {**_interval(diffs, point, mean_a, mean_b), "runs": len(runs)}


def critical_level(outcomes: dict[float, list[bool]], reps: int = 2000, seed: int = 0) -> dict:
    """The smallest level (e.g. learning rate) at which most runs fail (failure rate > 1/2), with a
    95% percentile bootstrap interval: seeds are resampled within each level and the critical level
    found again. None stands for "beyond the largest level tried"."""
    levels = sorted(outcomes)
    rng = np.random.default_rng(seed)

    def first_failing(rates) -> int:
        return next((i for i, r in enumerate(rates) if r > 0.5), len(levels))

    point = first_failing([np.mean(outcomes[lv]) if outcomes[lv] else 0.0 for lv in levels])
    draws = np.stack([rng.choice(np.asarray(outcomes[lv], float), (reps, len(outcomes[lv]))).mean(1)
                      if outcomes[lv] else np.zeros(reps) for lv in levels], 1)  # (reps, levels)
    found = np.array([first_failing(row) for row in draws])
    lo, hi = (int(v) for v in np.percentile(found, [2.5, 97.5], method="nearest"))

    def level(i: int):
        return levels[i] if i < len(levels) else None

    return {"critical": level(point), "ci95": [level(lo), level(hi)], "levels": levels,
            "method": "smallest level with failure rate > 1/2; 95% percentile bootstrap over seeds within levels"}


def per_seed_slope(points_by_seed: dict[int, list[tuple[float, float]]]) -> dict:
    """The slope of y on x fitted within each seed (OLS over that seed's points), then the 95% t
    interval of the per-seed slopes (each seed one sample, n − 1 df): the scale verdict's rule, which
    does not count a seed's points as independent draws."""
    slopes = {}
    for seed, pts in points_by_seed.items():
        x = np.array([p[0] for p in pts], float)
        y = np.array([p[1] for p in pts], float)
        if len(x) >= 2 and float(np.ptp(x)) > 0:
            slopes[seed] = float(np.polyfit(x, y, 1)[0])
    summary = mean_interval(list(slopes.values()))
    return {**summary, "slope": summary["mean"], "slopes": slopes,
            "method": "OLS slope within each seed, then the 95% t interval over seeds"}
