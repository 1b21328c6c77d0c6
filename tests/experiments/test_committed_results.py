"""Every committed verdict table under benchmarks/results/ is recomputed from its results.csv and
plan (sweep.json) by today's code: the numbers behind docs/claims.md stay checkable. When a rule
changes, the tables are recomputed with ``prism sweep report FOLDER --out NEW`` (their report.json
and report.md copied back) and docs/claims-history.md says what moved."""

import copy
import functools
import json
from pathlib import Path

import pytest

from prism_lm.experiments.report import read_results_csv, summarise

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
TABLES = sorted(p for pattern in ("claims-*", "ladder-*", "regime-*") for p in RESULTS.glob(pattern)
                if (p / "sweep.json").is_file())


@functools.cache
def recompute(folder: Path) -> dict:
    """A table's summary by today's rules from its plan and results.csv alone (computed once per table;
    a test that changes it works on a copy)."""
    plan = json.loads((folder / "sweep.json").read_text())
    return summarise(plan, read_results_csv(folder / "results.csv"), {})


@pytest.mark.parametrize("folder", TABLES, ids=[p.name for p in TABLES])
def test_committed_verdicts_are_recomputed_from_their_table(folder):
    recomputed = recompute(folder)
    committed = json.loads((folder / "report.json").read_text())
    for name, exp in committed["experiments"].items():
        for new, old in zip(recomputed["experiments"][name]["verdicts"], exp["verdicts"], strict=True):
            assert new["verdict"] == old["verdict"], (name, old["claim"])
            assert new["interval"]["mean"] == pytest.approx(old["interval"]["mean"])
            assert (new["p_adjusted"] is None) == (old["p_adjusted"] is None)
            assert old["p_adjusted"] is None or new["p_adjusted"] == pytest.approx(old["p_adjusted"])
        if exp.get("ladder"):  # the across-scale verdict: the slope of the gap against log tokens
            new, old = recomputed["experiments"][name]["ladder"], exp["ladder"]
            assert new["verdict"] == old["verdict"]
            assert new["slope_vs_log10_tokens"]["slope"] == pytest.approx(old["slope_vs_log10_tokens"]["slope"])
            assert new["slope_vs_log10_tokens"]["ci95"] == pytest.approx(old["slope_vs_log10_tokens"]["ci95"])


def test_there_is_a_committed_table():
    assert TABLES


@pytest.mark.slow  # renders the whole report of the largest table (about 10 s)
def test_a_committed_table_is_reported_again_by_todays_rules(tmp_path):
    """``prism sweep report TABLE --out NEW``: the verdicts from the table, the run-only parts (stream
    bootstraps, tuning curves) kept from the committed report, and the table itself left as it was."""
    import shutil

    from prism_lm.experiments.report import write_report

    folder = next(p for p in TABLES if "c1-c7" in p.name)
    table = tmp_path / folder.name
    shutil.copytree(folder, table)
    paths = write_report(table, tmp_path / "new")
    new = json.loads(paths["json"].read_text())["experiments"]
    committed = json.loads((folder / "report.json").read_text())["experiments"]
    assert [v["verdict"] for v in new["c3-stream-roles-tiny"]["verdicts"]] == [
        v["verdict"] for v in committed["c3-stream-roles-tiny"]["verdicts"]]
    assert new["c3-stream-roles-tiny"]["streams"] == committed["c3-stream-roles-tiny"]["streams"] != {}
    assert (table / "report.json").read_bytes() == (folder / "report.json").read_bytes()


@pytest.mark.slow  # renders a whole report (about 4 s)
def test_a_committed_tables_training_curves_are_kept_when_it_is_reported_again(tmp_path):
    """The training-curve figure needs the runs, which a table does not hold: the committed one is
    copied into the new report and still referenced."""
    import shutil

    from prism_lm.experiments.report import write_report

    folder = next(p for p in TABLES if (p / "figures").is_dir() and list((p / "figures").glob("*_loss.png")))
    table = tmp_path / folder.name
    shutil.copytree(folder, table)
    figure = next((folder / "figures").glob("*_loss.png"))
    paths = write_report(table, tmp_path / "new")
    assert (tmp_path / "new" / "figures" / figure.name).read_bytes() == figure.read_bytes()
    assert f"figures/{figure.name}" in paths["md"].read_text()


TUNED = [p for p in TABLES if any(e.get("tuning") for e in json.loads((p / "report.json").read_text())[
    "experiments"].values())]


@pytest.mark.parametrize("folder", TUNED, ids=[p.name for p in TUNED])
def test_a_committed_tables_tuning_curves_are_kept_when_it_is_reported_again(folder):
    """A table holds no tuning runs, so its recomputed tuning has the plan's points but no numbers:
    the committed curves (what each arm's verdict runs were chosen by) must survive a new report."""
    from prism_lm.experiments.report import _keep_run_parts

    summary = copy.deepcopy(recompute(folder))
    committed = json.loads((folder / "report.json").read_text())["experiments"]
    _keep_run_parts(summary, folder / "report.json")
    for name, exp in committed.items():
        if exp.get("tuning"):
            assert summary["experiments"][name]["tuning"] == exp["tuning"]
            assert any(p["n"] for c in exp["tuning"]["curves"].values() for p in c.values())
