"""Intervals, in one place: seed-level t intervals and the bootstraps over heads and over seeds.

Two kinds of sample meet in prism-lm's reports, and every interval says which it resampled:
- **runs (seeds)**: each run one sample. ``mean_interval`` is the 95% Student-t interval of the
  mean over runs; ``paired_difference`` the same for per-seed differences of two arms.
  ``hierarchical_bootstrap_diff`` resamples runs, then heads within each layer of each run.
- **heads of one model**: ``bootstrap_diff`` resamples heads (within layers when given strata). It
  says how the heads of this one model vary, not how another seed would.
"""

from __future__ import annotations

import math

import numpy as np

# two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30 (then 40, 60, 120, normal)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
def t_quantile(df: int) -> float:
    if df < 1:
        return math.nan
    if df <= 30:
        return _T975[df - 1]
    return 2.021 if df <= 40 else 2.000 if df <= 60 else 1.980 if df <= 120 else 1.960


def mean_interval(values: list[float]) -> dict:
    """Mean, 95% t interval and n of the finite values."""
    x = np.array([v for v in values if v is not None and math.isfinite(v)], float)
    if len(x) == 0:
        return {"mean": None, "ci95": None, "n": 0}
    if len(x) == 1:
        return {"mean": float(x[0]), "ci95": None, "n": 1}
    half = t_quantile(len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return {"mean": float(x.mean()), "ci95": [float(x.mean() - half), float(x.mean() + half)], "n": len(x)}


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict:
    """a minus b over the seeds both hold (dicts seed -> value)."""
    seeds = sorted(s for s in set(a) & set(b) if finite(a[s]) and finite(b[s]))
    return {**mean_interval([a[s] - b[s] for s in seeds]), "seeds": seeds}


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
