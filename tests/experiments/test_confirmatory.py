"""Confirmatory files: the primary alone, on seeds no committed table or tuning run used, sized for
80% power before training."""

import json
from pathlib import Path

import pytest

from prism_lm.errors import PrismError
from prism_lm.experiments.spec import load_experiments
from tests.helpers import write_experiment

ROOT = Path(__file__).resolve().parents[2]
CONFIRMATORY = [e for p in sorted((ROOT / "experiments").glob("*.toml")) if "confirmatory = true" in p.read_text()
                for e in load_experiments(p) if e.confirmatory]


def _used_seeds(besides: str) -> set[int]:
    """Every seed of every committed table's plan (verdict and tuning runs), but the tables of the
    experiment ``besides`` (a confirmatory file's own run holds its seeds)."""
    used = set()
    for plan in (ROOT / "benchmarks" / "results").glob("*/sweep.json"):
        experiments = json.loads(plan.read_text())["experiments"]
        if besides in experiments:
            continue
        for exp in experiments.values():
            used |= {r["seed"] for r in (*exp["runs"], *exp.get("tune", {}).get("runs", []))}
    return used


def test_there_is_a_confirmatory_file_and_its_seeds_are_fresh():
    assert CONFIRMATORY
    for e in CONFIRMATORY:
        used = _used_seeds(besides=e.name)
        assert used  # the committed tables hold seeds to avoid
        mine = set(e.seeds) | {r.seed for r in e.tune_runs}
        assert not mine & used, (e.name, sorted(mine & used))
        assert [v.primary for v in e.verdicts] == [True]  # the primary, alone


CONFIRM = """
confirmatory = true
"""


@pytest.mark.parametrize("edit, message", [
    (lambda t: CONFIRM + t, "states smallest_effect and expected_sd"),
    (lambda t: CONFIRM + t.replace('better = "lower"', 'better = "lower"\nsmallest_effect = 0.01\nexpected_sd = 0.05'),
     "reaches .* power at 2 seeds for 0.01 at sd 0.05; it needs \\d+ seeds"),
    (lambda t: CONFIRM + t.replace('better = "lower"', 'better = "lower"\nsmallest_effect = 0.1\nexpected_sd = 0.001')
     + '\n[tune]\ngrid = { "optim.lr" = [1e-3, 1e-2] }\nseeds = [0]\nmetric = "val_loss_32"\n',
     "confirmatory seeds \\[0\\] are also tuning seeds"),
    (lambda t: "confirmatory = 1\n" + t, "confirmatory must be true or false"),
])
def test_a_confirmatory_file_that_is_not_sized_or_not_fresh_is_refused(tmp_path, edit, message):
    path = write_experiment(tmp_path)
    path.write_text(edit(path.read_text()).replace("[[verdicts]]", "[[verdicts]]\nprimary = true", 1))
    with pytest.raises(PrismError, match=message) as info:
        load_experiments(path)
    assert "\n" not in str(info.value)


def test_a_sized_confirmatory_file_loads(tmp_path):
    path = write_experiment(tmp_path)
    text = path.read_text().replace('better = "lower"', 'better = "lower"\nprimary = true\nsmallest_effect = 0.1\n'
                                    'expected_sd = 0.001')
    path.write_text(CONFIRM + text)
    (exp,) = load_experiments(path)
    assert exp.confirmatory
