"""The one registry of head measures: each measure's name (its per-head key and its column suffix),
definition, value for a uniform head, the look-alikes it must tell apart, and the synthetic heads
it is tested on.

Design choices:
- A measure is computed once, in ``heads.pattern_metrics`` (or, with annotations, in
  ``heads._HeadSums``); everything else reads its name and facts here: the head tables of
  ``prism analyze``, the sweep's columns (``{stream}_{name}``, ``all_{name}``, ``stream_diff_{name}``),
  the report's interval choice (fractions get the logit-scale interval) and the verdicts' metrics.
- The uniform value is never hand-written: it is ``pattern_metrics`` of the uniform causal head at
  the window length asked (``heads.uniform_values``; this module imports nothing of the analysis),
  so a reader can tell "no better than spreading mass evenly" from a finding.
- Each measure lists ``ranks``: pairs (higher, lower) of the synthetic heads below on which it must
  order the two, the look-alikes it exists to separate. ``tests/analysis/test_measures.py`` builds the
  heads and checks every pair of every measure, so a measure that cannot tell its look-alikes apart
  fails its test, not a referee's reading.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FAR_LAG = 40  # the far heads' lag: beyond lag 8 and well inside a 128-token window


@dataclass(frozen=True)
class Measure:
    name: str
    label: str  # the words a table heads its column with (the name in the glossary beside it)
    definition: str
    tells_apart: str
    ranks: tuple[tuple[str, str], ...] = ()  # (higher, lower) synthetic heads it must order
    fraction: bool = False  # a fraction in [0, 1]: logit-scale intervals in the sweep report
    annotated: bool = False  # needs dependency annotations (recall tokens and their antecedents)
    stream_diff: bool = True  # a first-minus-second stream column exists
    per_model: bool = False  # one value per model (a ``{name}`` column), not per head


MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure(
            "mass_self",
            "self mass",
            "attention on the query's own token (lag 0), mean over queries",
            "self-attention from local attention",
            (("self", "previous"), ("self", "diffuse")),
            fraction=True,
        ),
        Measure(
            "mass_lags_1_8",
            "mass at lags 1-8",
            "attention on lags 1-8, mean over queries",
            "local attention from self-attention",
            (("previous", "self"), ("previous", "far_spike")),
            fraction=True,
        ),
        Measure(
            "mass_beyond_8",
            "mass beyond lag 8",
            "attention beyond lag 8, mean over queries (self + local + beyond = 1)",
            "far from local; it does NOT tell far-and-selective from diffuse (use far_focus)",
            (("far_spike", "previous"), ("diffuse", "far_half")),
            fraction=True,
        ),
        Measure(
            "far_focus",
            "far and focused",
            "per query, the mass beyond lag 8 off the window's first four keys times (1 - the "
            "query's entropy relative to the uniform's), mean over queries: far AND focused, and not a sink; 0 for "
            "a uniform head",
            "a far-and-selective head from a diffuse one (which far mass ranks higher) and from a sink",
            (
                ("far_spike", "diffuse"),
                ("far_half", "diffuse"),
                ("far_spike", "previous"),
                ("far_spike", "sink"),
                ("far_half", "self_half"),
            ),
            fraction=True,
        ),
        Measure(
            "entropy_relative",
            "entropy / uniform",
            "entropy over the visible keys divided by the uniform's log(i + 1), mean over "
            "queries 1..: 1 uniform, 0 one key",
            "diffuse from focused, wherever the focus is",
            (("diffuse", "far_spike"), ("diffuse", "self")),
            fraction=True,
        ),
        Measure(
            "mean_distance",
            "mean distance",
            "Σ_j A_ij (i - j), mean over queries",
            "far from near on average (diffuse heads score high too)",
            (("far_spike", "previous"),),
        ),
        Measure(
            "median_lag",
            "median lag",
            "the lag by which a query has spent half its mass, mean over queries",
            "where the bulk of the mass sits",
            (("far_spike", "previous"),),
        ),
        Measure(
            "entropy",
            "entropy (nats)",
            "-Σ_j A_ij log A_ij (nats), mean over queries",
            "diffuse from focused (grows with i)",
            (("diffuse", "self"),),
        ),
        Measure(
            "mass_within_8",
            "mass within lag 8",
            "attention at lags 0-8",
            "near from far",
            (("previous", "far_spike"),),
            fraction=True,
        ),
        Measure(
            "mass_beyond_64",
            "mass beyond lag 64",
            "attention beyond lag 64",
            "very far from the rest",
            (("diffuse", "far_spike"),),
            fraction=True,
        ),
        Measure(
            "profile_sharpness",
            "profile sharpness",
            "centroid frequency of the attention-versus-lag profile's |rfft| (cycles per "
            "token): how sharp a profile is, not where",
            "a sharp profile from a smooth one",
            (),
        ),
        Measure(
            "sink_first",
            "first-position mass",
            "attention on the window's first position, queries after it",
            "a sink from attention spread evenly",
            (("sink", "diffuse"), ("sink", "self")),
            fraction=True,
        ),
        Measure(
            "sink_first4",
            "first-four mass",
            "attention on the window's first four positions, queries after them",
            "a sink from attention spread evenly",
            (("sink", "diffuse"), ("sink_half", "self")),
            fraction=True,
        ),
        Measure(
            "sink_first4_rel",
            "first-four / uniform",
            "sink_first4 divided by its value for a uniform head at the same window: 1 is "
            "no sink, above 1 more than even spreading puts there",
            "a sink from a uniform head, at any window length",
            (("sink", "diffuse"), ("sink_half", "diffuse")),
        ),
        Measure(
            "sink_first4_nonself",
            "first-four / off-self",
            "per query past the first four, their mass divided by the mass off the own "
            "token, mean over queries: a sink among the keys a head does not spend on itself",
            "a sink from self-attention that leaves the rest even",
            (("sink_half", "self_half"),),
            fraction=True,
        ),
        Measure(
            "mass_beyond_far",
            "mass beyond the far lag",
            "attention beyond the 90th-percentile distance of the data's dependencies",
            "reaching as far as the dependencies do",
            annotated=True,
            fraction=True,
        ),
        Measure(
            "antecedent_hit_rate",
            "antecedent hit rate",
            "attention from the position that predicts a recall token to its antecedent",
            "finding the antecedent",
            annotated=True,
            fraction=True,
        ),
        Measure(
            "antecedent_lag_null",
            "lag-matched null",
            "the head's own mean attention at each recall's lag",
            "attending at that distance anyway",
            annotated=True,
            fraction=True,
            stream_diff=False,
        ),
        Measure(
            "cross_kernel",
            "cross-stream kernel",
            "the empirical cross-stream kernel: mean over layers and heads h of |Pearson "
            "correlation| over lags 1..T/2 between signal head h's and noise head h's mean logit-versus-lag "
            "profile (two-stream kinds); 1 when the two streams' position codes resonate exactly, and lifted "
            "towards 1 by any trend both profiles share (recency, the data's own lag structure), so only a "
            "paired difference between arms that share all else reads resonance, never the level",
            "an exact resonance from pi, all else equal (tested on profiles of a shared trend plus cosines at "
            "each stream's frequencies, and on equal and mirrored profiles, in tests/analysis/test_heads.py)",
            stream_diff=False,
            per_model=True,
        ),
        Measure(
            "selectivity",
            "selectivity",
            "antecedent_hit_rate minus antecedent_lag_null: finding the antecedent beyond attending at its distance",
            "selective recall from attending at a distance",
            annotated=True,
        ),
    )
}

PATTERN_MEASURES = tuple(name for name, m in MEASURES.items() if not m.annotated and not m.per_model)
HEAD_COLUMNS = tuple(name for name, m in MEASURES.items() if not m.per_model)  # {stream}_{name}, all_{name}
STREAM_DIFF_COLUMNS = tuple(name for name, m in MEASURES.items() if m.stream_diff)
MODEL_COLUMNS = tuple(name for name, m in MEASURES.items() if m.per_model)  # {name} columns, two-stream kinds
FRACTIONS = tuple(name for name, m in MEASURES.items() if m.fraction)


def synthetic_head(name: str, T: int) -> torch.Tensor:
    """(T, T) causal attention of a head whose answer is known (rows sum to 1):
    ``diffuse`` (uniform over visible keys), ``self``, ``previous`` (lag 1), ``far_spike`` (all on lag
    FAR_LAG; on key 0 before it), ``far_half`` (half there, half on lag 1), ``sink`` (all on key 0),
    ``sink_half`` (half on key 0, half on the own token), ``self_half`` (half on the own token, the
    rest even over the others)."""
    i = torch.arange(T)
    visible = torch.ones(T, T).tril()
    if name == "diffuse":
        return visible / visible.sum(-1, keepdim=True)
    if name in ("self_half",):
        rest = (visible - torch.eye(T)) / (visible.sum(-1, keepdim=True) - 1).clamp(min=1)
        out = 0.5 * torch.eye(T) + 0.5 * rest
        out[0, 0] = 1.0
        return out
    parts = {
        "self": [(1.0, i)],
        "previous": [(1.0, (i - 1).clamp(min=0))],
        "far_spike": [(1.0, (i - FAR_LAG).clamp(min=0))],
        "far_half": [(0.5, (i - FAR_LAG).clamp(min=0)), (0.5, (i - 1).clamp(min=0))],
        "sink": [(1.0, torch.zeros_like(i))],
        "sink_half": [(0.5, torch.zeros_like(i)), (0.5, i)],
    }
    if name not in parts:
        raise ValueError(f"unknown synthetic head {name!r}")
    out = torch.zeros(T, T)
    for weight, key in parts[name]:
        out[i, key] += weight
    return out


SYNTHETIC_HEADS = ("diffuse", "self", "previous", "far_spike", "far_half", "sink", "sink_half", "self_half")


def glossary(uniform: dict[str, float]) -> list[list[str]]:
    """(label, name, definition, uniform value, what it tells apart): the table reports print, with
    ``uniform`` the uniform head's values at the report's window (``heads.uniform_values``)."""
    return [
        [m.label, name, m.definition, "–" if name not in uniform else f"{uniform[name]:.3g}", m.tells_apart]
        for name, m in MEASURES.items()
    ]
