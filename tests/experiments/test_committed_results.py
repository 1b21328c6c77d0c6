"""Every committed verdict table under benchmarks/results/ is recomputed from its results.csv and
plan (sweep.json) by today's code: the numbers behind RESULTS.md stay checkable."""

import json
from pathlib import Path

import pytest

from prism_lm.experiments.report import read_results_csv, summarise

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
TABLES = sorted(p for pattern in ("claims-*", "ladder-*") for p in RESULTS.glob(pattern)
                if (p / "sweep.json").is_file())


@pytest.mark.parametrize("folder", TABLES, ids=[p.name for p in TABLES])
def test_committed_verdicts_are_recomputed_from_their_table(folder):
    plan = json.loads((folder / "sweep.json").read_text())
    recomputed = summarise(plan, read_results_csv(folder / "results.csv"), {})
    committed = json.loads((folder / "report.json").read_text())
    for name, exp in committed["experiments"].items():
        for new, old in zip(recomputed["experiments"][name]["verdicts"], exp["verdicts"], strict=True):
            assert new["verdict"] == old["verdict"], (name, old["claim"])
            assert new["interval"]["mean"] == pytest.approx(old["interval"]["mean"])
            assert (new["p_holm"] is None) == (old["p_holm"] is None)
            assert old["p_holm"] is None or new["p_holm"] == pytest.approx(old["p_holm"])
        if exp.get("ladder"):  # the across-scale verdict: the slope of the gap against log tokens
            new, old = recomputed["experiments"][name]["ladder"], exp["ladder"]
            assert new["verdict"] == old["verdict"]
            assert new["slope_vs_log10_tokens"]["slope"] == pytest.approx(old["slope_vs_log10_tokens"]["slope"])


def test_there_is_a_committed_table():
    assert TABLES
