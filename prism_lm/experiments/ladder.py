"""Across scale (``[ladder]``): the gap between two arms at each ladder point, its slope against log
tokens fitted within each seed (the scale verdict), the gap at the last point and the tokens the arm
needs to reach the baseline's level there. The report renders it; the rules are here.
"""

from __future__ import annotations

import math

from prism_lm.experiments.spec import group_name
from prism_lm.stats import mean_interval, paired_difference, per_seed_slope


def summarise_ladder(exp: dict, by_group: dict) -> dict | None:
    """Per ladder point the paired difference arm − baseline (t interval over seeds) with the point's
    tokens and parameters; over the points of the first point's size (widths at equal tokens would only
    add scatter): the slope of the difference against log10 tokens fitted within each seed, its t
    interval over seeds and verdict, the gap at the last of those points, and the tokens the arm needs
    to reach the baseline's level there."""
    ladder = exp.get("ladder")
    if not ladder:
        return None
    points, per_seed, curve, width, last = [], {}, [], None, None
    for point in ladder["points"]:
        arm = by_group.get(group_name(ladder["arm"], point), {})
        base = by_group.get(group_name(ladder["baseline"], point), {})
        a, b = arm.get(ladder["metric"], {}), base.get(ladder["metric"], {})
        diff = paired_difference(a, b)
        tokens = mean_interval(list(arm.get("tokens_seen", {}).values()))["mean"]
        params = mean_interval(list(arm.get("parameters", {}).values()))["mean"]
        points.append({"point": point, "difference": diff, "tokens": tokens, "parameters": params})
        width = params if width is None else width
        if tokens and params == width and diff["seeds"]:  # the slope is over the points at the first point's size
            last = diff
            for seed in diff["seeds"]:
                per_seed.setdefault(seed, []).append((math.log10(tokens), a[seed] - b[seed]))
            curve.append((tokens, mean_interval([a[s] for s in diff["seeds"]])["mean"],
                          mean_interval([b[s] for s in diff["seeds"]])["mean"]))
    fit = per_seed_slope(per_seed)
    return {**ladder, "points": points, "slope_vs_log10_tokens": fit, "last_point_difference": last,
            "tokens_to_match": _tokens_to_match(curve),
            "verdict": _gap_verdict(fit, [d for pts in per_seed.values() for _, d in pts])}


def _tokens_to_match(curve: list[tuple[float, float, float]]) -> dict | None:
    """The tokens at which the arm's mean curve (against log10 tokens) reaches the baseline's level at
    the last point: interpolated between two points, or extrapolated along the last two points' line
    (labelled so), or None where the curve moves away from it."""
    if len(curve) < 2 or curve[-1][0] == curve[-2][0]:
        return None
    target = curve[-1][2]
    xs = [math.log10(t) for t, _, _ in curve]
    ys = [y for _, y, _ in curve]
    for i in range(len(xs) - 1):
        (x0, y0), (x1, y1) = (xs[i], ys[i]), (xs[i + 1], ys[i + 1])
        if (y0 - target) * (y1 - target) <= 0 and y0 != y1:
            return _match(x0 + (target - y0) * (x1 - x0) / (y1 - y0), curve, "interpolated between ladder points")
    slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    if slope == 0 or (target - ys[-1]) / slope < 0:
        return {"tokens": None, "baseline_level": target, "how": "not reached: the arm's curve moves away from it"}
    return _match(xs[-1] + (target - ys[-1]) / slope, curve, "extrapolated along the last two points")


def _match(log_tokens: float, curve: list, how: str) -> dict:
    tokens = 10 ** log_tokens
    return {"tokens": tokens, "baseline_level": curve[-1][2], "times_last_point": tokens / curve[-1][0], "how": how}


def _gap_verdict(fit: dict, diffs: list[float]) -> str:
    """Closes: the per-seed slopes' interval lies on the side that moves the mean difference toward 0."""
    if fit["ci95"] is None:
        return "no verdict: fewer than two seeds with two points that differ in tokens"
    lo, hi = fit["ci95"]
    sign = 1.0 if sum(diffs) >= 0 else -1.0  # the gap's side
    if (hi < 0 if sign > 0 else lo > 0):
        return "the gap closes with tokens"
    if (lo > 0 if sign > 0 else hi < 0):
        return "the gap grows with tokens"
    return f"inconclusive: the slope per decade of tokens allows {lo:.3g} to {hi:.3g}"
