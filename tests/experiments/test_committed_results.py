"""Every committed verdict table under benchmarks/results/ is recomputed from its results.csv and
plan (sweep.json) by today's code: the numbers behind docs/claims.md stay checkable. When a rule
changes, the tables are recomputed with ``prism sweep report FOLDER --out NEW`` (their report.json
and report.md copied back) and docs/claims-history.md says what moved."""

import json
from pathlib import Path

import pytest

from prism_lm.experiments.report import read_results_csv, summarise

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
TABLES = sorted(p for pattern in ("claims-*", "ladder-*", "regime-*") for p in RESULTS.glob(pattern)
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
