"""The registry of head measures: every measure orders the synthetic heads it claims to tell
apart, its uniform value is what a uniform head scores, and every consumer reads its names."""

import pytest
import torch

from prism_lm.analysis.heads import METRICS, pattern_metrics, uniform_values
from prism_lm.analysis.measures import (
    FRACTIONS,
    MEASURES,
    PATTERN_MEASURES,
    SYNTHETIC_HEADS,
    glossary,
    synthetic_head,
)

T = 128


@pytest.fixture(scope="module")
def scores():
    return {h: {k: float(v[0]) for k, v in pattern_metrics(synthetic_head(h, T)[None, None]).items()
                if v.dim() == 1} for h in SYNTHETIC_HEADS}


def test_the_synthetic_heads_are_causal_distributions():
    for h in SYNTHETIC_HEADS:
        A = synthetic_head(h, T)
        assert torch.allclose(A.sum(-1), torch.ones(T)) and (A.triu(1) == 0).all() and (A >= 0).all(), h


@pytest.mark.parametrize("name", [n for n, m in MEASURES.items() if m.ranks])
def test_every_measure_orders_the_look_alikes_it_claims_to_tell_apart(name, scores):
    for higher, lower in MEASURES[name].ranks:
        assert scores[higher][name] > scores[lower][name] + 1e-3, (name, higher, lower)


def test_far_mass_fails_the_far_and_selective_test_and_far_focus_passes_it(scores):
    """The C3 look-alike: a head that reaches a far key half the time loses to a uniform head on mass
    beyond lag 8 (0.47 against 0.75) and wins on far_focus (0.28 against 0); a sink is not far."""
    assert scores["diffuse"]["mass_beyond_8"] > scores["far_half"]["mass_beyond_8"]
    assert scores["far_half"]["far_focus"] > 0.2 > abs(scores["diffuse"]["far_focus"])
    assert abs(scores["sink"]["far_focus"]) < 1e-6 and scores["sink"]["mass_beyond_8"] > 0.9


def test_a_planted_sink_is_flagged_relative_to_the_uniform_value(scores):
    first4 = sum(4 / (i + 1) for i in range(4, T)) / (T - 4)  # hand value: uniform first-four mass
    assert uniform_values(T)["sink_first4"] == pytest.approx(first4, rel=1e-6)
    assert uniform_values(T)["sink_first4_rel"] == pytest.approx(1.0, rel=1e-6)
    assert scores["sink"]["sink_first4_rel"] == pytest.approx(1.0 / first4, rel=1e-5)  # all of it on the sink
    assert scores["sink_half"]["sink_first4_rel"] > 4
    assert scores["sink_half"]["sink_first4_nonself"] == pytest.approx(1)
    assert scores["self"]["sink_first4_rel"] == 0.0  # the own-token mass is not a sink


def test_uniform_values_are_the_uniform_heads_and_printed_in_the_glossary():
    u = uniform_values(T)
    assert u["entropy_relative"] == pytest.approx(1.0) and u["far_focus"] == pytest.approx(0.0, abs=1e-6)
    assert u["mass_beyond_8"] == pytest.approx(sum((i - 8) / (i + 1) for i in range(9, T)) / T, rel=1e-5)
    rows = {r[1]: r for r in glossary(uniform_values(128))}  # (label, code name, definition, uniform, tells apart)
    assert set(rows) == set(MEASURES) and rows["sink_first4_rel"][3] == "1"
    assert rows["cross_kernel"][3] == "–"  # a per-model measure: no uniform head value
    labels = [m.label for m in MEASURES.values()]
    assert len(set(labels)) == len(labels) and all(lab != name for lab, name in zip(labels, MEASURES, strict=True)
                                                   if "_" in name)  # words, not code names


def test_every_consumer_reads_the_registry():
    from prism_lm.experiments.columns import bounded
    from prism_lm.experiments.job import HEAD_METRICS, STREAM_DIFF_METRICS

    assert set(METRICS) == set(PATTERN_MEASURES)
    assert set(HEAD_METRICS) == {n for n, m in MEASURES.items() if not m.per_model}
    assert set(STREAM_DIFF_METRICS) == {n for n, m in MEASURES.items() if m.stream_diff}
    assert all(bounded(f"signal_{name}") for name in FRACTIONS)
    assert not bounded("signal_sink_first4_rel") and not bounded("stream_diff_mass_self")


def test_the_explorer_shows_registered_measures_only():
    from prism_lm.analysis.explore import STATS

    assert set(STATS) <= set(MEASURES)
