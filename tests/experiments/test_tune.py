"""[tune]: each arm's hyper-parameters chosen on a held-out part of train, then the verdict runs."""

import pytest

from prism_lm.errors import PrismError
from prism_lm.experiments.report import write_report
from prism_lm.experiments.runner import run_sweep
from prism_lm.experiments.spec import (
    TuneSpec,
    apply_tuning,
    choose_tuned,
    load_experiments,
    point_key,
    tuned_group,
)
from prism_lm.experiments.sweep_dir import SweepDir
from tests.helpers import write_experiment

TUNE = """
[tune]
grid = { "optim.lr" = [1e-3, 1e-2] }
seeds = [100]
metric = "val_loss_32"
holdout = 0.2
"""


def _lr(lr):
    return point_key({"optim.lr": lr})


def test_each_group_gets_the_point_with_its_lowest_mean_metric():
    tune = TuneSpec({"optim.lr": [1e-3, 3e-3, 1e-2]}, [7, 8], "val_loss_32")
    scores = {("prism", _lr(1e-3)): [2.0, 2.2], ("prism", _lr(3e-3)): [1.5, 1.7], ("prism", _lr(1e-2)): [1.9, 1.2],
              ("gpt", _lr(1e-3)): [3.0, 3.0], ("gpt", _lr(3e-3)): [2.5, 2.9], ("gpt", _lr(1e-2)): [2.6, 2.0]}
    assert choose_tuned(tune, scores, ["prism", "gpt"]) == {"prism": {"optim.lr": 1e-2}, "gpt": {"optim.lr": 1e-2}}
    scores[("prism", _lr(1e-2))] = [1.9, 1.9]  # now 3e-3 is prism's best (1.6), 1e-2 stays gpt's (2.3)
    assert choose_tuned(tune, scores, ["prism", "gpt"])["prism"] == {"optim.lr": 3e-3}
    with pytest.raises(PrismError, match="no tuning run of 'diff'"):
        choose_tuned(tune, scores, ["prism", "diff"])
    # a ladder: each point's group chooses on its own
    scores = {("prism/max_iters=200", _lr(1e-3)): [2.0], ("prism/max_iters=200", _lr(1e-2)): [1.0],
              ("prism/max_iters=800", _lr(1e-3)): [0.5], ("prism/max_iters=800", _lr(1e-2)): [0.9]}
    assert choose_tuned(tune, scores, ["prism/max_iters=200", "prism/max_iters=800"]) == {
        "prism/max_iters=200": {"optim.lr": 1e-2}, "prism/max_iters=800": {"optim.lr": 1e-3}}


LAMBDA_TUNE = TUNE + """
[tune.arms.prism]
points = [{}, { "model.prism.lambda_schedule" = "constant", "model.prism.lambda_start" = 1.0 },
          { "model.prism.lambda_schedule" = "learned" }]
"""


def test_an_arm_tunes_its_own_knobs_beside_the_shared_grid(tmp_path):
    """PRISM's λ (the paper's schedule, held at 1, learned) is among its tuned axes; GPT has no λ."""
    (exp,) = load_experiments(write_experiment(tmp_path, extra=LAMBDA_TUNE))
    prism = [r for r in exp.tune_runs if r.arm == "prism"]
    gpt = [r for r in exp.tune_runs if r.arm == "gpt"]
    assert len(prism) == 2 * 3 and len(gpt) == 2
    held = [r for r in prism if r.config.model.prism.lambda_schedule == "constant"]
    assert len(held) == 2 and all(r.config.model.prism.lambda_start == 1.0 for r in held)
    assert "prism/tune:lr=0.01,lambda_schedule=learned" in {r.group for r in prism}
    chosen = {"prism": {"optim.lr": 1e-2, "model.prism.lambda_schedule": "learned"}, "gpt": {"optim.lr": 1e-3}}
    apply_tuning(exp, chosen)
    assert {r.config.model.prism.lambda_schedule for r in exp.runs if r.arm == "prism"} == {"learned"}


def test_a_ladder_tunes_at_every_point(tmp_path):
    ladder = ('\n[ladder]\npoints = [{ "run.max_iters" = 4 }, { "run.max_iters" = 8 }]\narm = "prism"\n'
              'baseline = "gpt"\nmetric = "val_loss_32"\n')
    path = write_experiment(tmp_path, extra=TUNE)
    text = path.read_text()
    path.write_text(text[:text.index("[[verdicts]]")] + TUNE + ladder)
    (exp,) = load_experiments(path)
    assert len(exp.tune_runs) == 2 * 2 * 2  # arms x ladder points x lrs (one tuning seed)
    at8 = [r for r in exp.tune_runs if r.group.startswith("prism/max_iters=8/tune:")]
    assert len(at8) == 2 and all(r.config.run.max_iters == 8 and r.config.data.holdout == 0.2 for r in at8)
    assert {tuned_group(r.group) for r in exp.tune_runs} == set(exp.groups)


def test_tuning_runs_train_on_part_of_train_and_verdict_runs_wait_for_the_choice(tmp_path):
    (exp,) = load_experiments(write_experiment(tmp_path, extra=TUNE))
    assert not exp.planned and len(exp.tune_runs) == 2 * 2 * 1
    assert {r.config.data.holdout for r in exp.tune_runs} == {0.2} and {r.seed for r in exp.tune_runs} == {100}
    assert {r.group for r in exp.tune_runs} == {"prism/tune:lr=0.001", "prism/tune:lr=0.01", "gpt/tune:lr=0.001",
                                                "gpt/tune:lr=0.01"}
    assert all(r.config.data.holdout == 0.0 for r in exp.runs)  # the verdict runs score on val


@pytest.mark.parametrize("tune, message", [
    ('[tune]\ngrid = { "optim.lr" = [1e-3] }\nseeds = [9]\nmetric = "val_loss_32"', "two values or more"),
    ('[tune]\ngrid = { "optim.nope" = [1e-3, 1e-2] }\nseeds = [9]\nmetric = "val_loss_32"', "optim.nope"),
    ('[tune]\ngrid = { "optim.lr" = [1e-3, 1e-2] }\nseeds = [9]\nmetric = "val_loss_99"', "tune.metric"),
    ('[tune]\ngrid = { "optim.lr" = [1e-3, 1e-2] }\nseeds = [9]\nmetric = "val_loss_32"\nsteps = 3',
     "unknown tune key"),
    ('[tune]\ngrid = { "optim.lr" = [1e-3, 1e-2] }\nseeds = [9]\nmetric = "val_loss_32"\nholdout = 0.9', "holdout"),
    ('[tune]\ngrid = { "optim.lr" = [1e-3, 1e-2] }\nmetric = "val_loss_32"', "needs 'seeds'"),
    ('[tune]\nseeds = [9]\nmetric = "val_loss_32"', "needs a grid or some arm's own points"),
    (TUNE + '[tune.arms.prsm]\npoints = [{}, {}]', "tune.arms names unknown arm 'prsm'"),
    (TUNE + '[tune.arms.prism]\npoints = [{}]', "needs points = \\[two tables or more\\]"),
    (TUNE + '[tune.arms.prism]\npoints = [{}, { "lr" = 1 }]', "point key 'lr' must be"),
])
def test_bad_tune_tables_are_one_line_errors(tmp_path, tune, message):
    with pytest.raises(PrismError, match=message) as info:
        load_experiments(write_experiment(tmp_path, extra="\n" + tune + "\n"))
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_a_tuned_sweep_runs_tuning_then_verdicts_at_each_arms_choice(tmp_path):
    path = write_experiment(tmp_path, extra=TUNE)
    lines = []
    assert run_sweep(path, tmp_path / "out", workers=2, log=lines.append) == 0
    assert any("tuned on the held-out part of train" in line for line in lines)
    plan = SweepDir(tmp_path / "out").read_plan()["experiments"]["two"]
    chosen = plan["tune"]["chosen"]
    assert set(chosen) == {"prism", "gpt"} and all(c["optim.lr"] in (1e-3, 1e-2) for c in chosen.values())
    assert len(plan["runs"]) == 4 and len(plan["tune"]["runs"]) == 4
    sweep = SweepDir(tmp_path / "out")
    for entry in plan["runs"]:  # each verdict run trained at its arm's chosen lr, on all of train
        job = sweep.run(entry["folder"]).read_job()
        assert job["config"]["optim"]["lr"] == chosen[entry["arm"]]["optim.lr"]
        assert job["config"]["data"]["holdout"] == 0.0
    report = write_report(tmp_path / "out")
    summary = __import__("json").loads(report["json"].read_text())["experiments"]["two"]["tuning"]
    prism = summary["curves"]["prism"]
    best = min(prism.values(), key=lambda p: p["mean"])
    assert best["point"] == {"optim.lr": chosen["prism"]["optim.lr"]}
    assert "Tuning on the held-out 20% of the training split" in report["md"].read_text()
    again = []
    assert run_sweep(path, tmp_path / "out", log=again.append) == 0 and all("to run" not in line or " 0 to run" in line
                                                                           for line in again)


@pytest.mark.slow  # a two-file suite of 16 jobs (about 25 s); its rule, EvaluateSpec.covers, is tested by default
def test_a_run_shared_with_a_tuned_files_verdict_runs_is_not_evaluated_again_on_a_rerun(tmp_path):
    """In a suite, a run that an untuned file shares with a tuned file's verdict run is evaluated
    for both; a rerun finds it finished in both phases (it used to flip between the two evaluations)."""

    write_experiment(tmp_path, steps=4, name="tuned.toml", extra=TUNE)
    plain = write_experiment(tmp_path, steps=4, name="plain.toml").read_text()
    plain = plain.replace("[arms.gpt]\nbase", "[grid]\n\"optim.lr\" = [1e-3, 1e-2]\n[arms.gpt]\nbase")
    plain = plain.replace("contexts = [16, 32]", "contexts = [32]")
    plain = plain.replace('arm = "prism"\nbaseline = "gpt"', 'arm = "prism/lr=0.001"\nbaseline = "gpt/lr=0.001"')
    (tmp_path / "plain.toml").write_text('name = "plain"\n' + plain)
    (tmp_path / "suite.toml").write_text('include = ["tuned.toml", "plain.toml"]\n')
    first = []
    assert run_sweep(tmp_path / "suite.toml", tmp_path / "out", workers=2, log=first.append) == 0
    layout = SweepDir(tmp_path / "out").read_plan()
    assert len(layout["runs"]) == len(set(layout["runs"].values())) == 12  # one folder per run: none trained twice
    assert sum("done:" in line for line in first) == 12 + 4  # 12 trained; the 4 shared ones evaluated once more
    again = []
    assert run_sweep(tmp_path / "suite.toml", tmp_path / "out", log=again.append) == 0
    counts = [line for line in again if "runs in 2 experiment(s)" in line]
    assert len(counts) == 2 and all(line.endswith(" 0 to run") or "0 to run" in line for line in counts), counts


def test_an_evaluation_covers_one_that_asks_for_less():
    """The rule that lets a shared run's one evaluation serve both files (the sweep above, in slow)."""
    from prism_lm.experiments.job import EvaluateSpec

    wide, narrow = EvaluateSpec([16, 32], 4), EvaluateSpec([32], 4)
    assert wide.covers(narrow) and not narrow.covers(wide) and not EvaluateSpec([16, 32], 8).covers(wide)
    assert wide.covers(EvaluateSpec([32], 0))  # asking for no head statistics: any head windows will do
