"""Paired timing on a noisy machine: many short alternating rounds of two candidates in one process,
and the median of the per-round time ratios with a distribution-free 95% interval.

Why this shape. On a shared 2-core machine the load drifts by ±10% over seconds, more than the 5%
differences worth deciding. A load change inside one round hits both candidates alike, so the ratio
of their times within a round cancels it; the order inside each round is shuffled (seeded), so
neither side always runs first, warm or cold. The median of the rounds' ratios resists the odd
round a background job spoils, and its interval comes from order statistics (the binomial
distribution of how many ratios fall below the true median, ``scipy.stats.binom``): exact for any
continuous distribution of ratios, no normality assumed.

    from benchmarks.paired_timing import paired_rounds
    out = paired_rounds({"a": step_a, "b": step_b}, rounds=41, warmup=2)
    out["ratio"]  # {"baseline": "a", "candidate": "b", "median": ..., "ci95": [lo, hi], ...}

``ratio = time(baseline) / time(candidate)``: above 1 the candidate is faster. A difference is
*seen* when the interval excludes 1.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

from scipy.stats import binom


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median of ``values``: order statistics (x_(k), x_(n+1-k))
    with the largest k whose coverage 1 - 2·P(Bin(n, ½) < k) is at least ``confidence``."""
    xs = sorted(values)
    n = len(xs)
    if n < 6:
        raise ValueError(f"a 95% interval for a median needs at least 6 rounds, got {n}")
    k = int(binom.ppf((1 - confidence) / 2, n, 0.5))  # P(Bin <= k) reaches alpha/2 here
    while k > 0 and 1 - 2 * binom.cdf(k - 1, n, 0.5) < confidence:
        k -= 1
    k = max(k, 1)
    return xs[k - 1], xs[n - k]


def ratio_summary(baseline: list[float], candidate: list[float], names: tuple[str, str] = ("baseline", "candidate"),
                  confidence: float = 0.95) -> dict:
    """The per-round ratios baseline/candidate (paired by round), their median and its interval."""
    if len(baseline) != len(candidate):
        raise ValueError("paired rounds: both candidates need one time per round")
    ratios = [b / c for b, c in zip(baseline, candidate, strict=True)]
    lo, hi = median_interval(ratios, confidence)
    return {"baseline": names[0], "candidate": names[1], "rounds": len(ratios), "median": statistics.median(ratios),
            "ci95": [lo, hi], "seen": lo > 1 or hi < 1,
            "what": f"time({names[0]}) / time({names[1]}) per round; median and distribution-free "
                    f"{confidence:.0%} interval over rounds (order statistics)"}


def paired_rounds(candidates: dict[str, Callable[[], object]], rounds: int = 41, warmup: int = 2, seed: int = 0,
                  clock: Callable[[], float] = time.perf_counter, sync: Callable[[], None] = lambda: None) -> dict:
    """Time each of two candidates once per round, in a shuffled order, ``rounds`` times after ``warmup``
    untimed rounds. Returns {"times": {name: [...]}, "ratio": ratio_summary(first, second)}."""
    if len(candidates) != 2:
        raise ValueError("paired_rounds compares exactly two candidates")
    names = list(candidates)
    order = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        for name in order.sample(names, 2):
            sync()
            t0 = clock()
            candidates[name]()
            sync()
            if r >= warmup:
                times[name].append(clock() - t0)
    return {"times": times, "ratio": ratio_summary(times[names[0]], times[names[1]], (names[0], names[1]))}
