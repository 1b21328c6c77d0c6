import copy

import pytest

from prism_lm.errors import PrismError
from prism_lm.experiments.runner import plan
from prism_lm.experiments.spec import identity, load_experiments
from tests.helpers import write_experiment

VERDICT2 = """
[[verdicts]]
claim = "GPT beats PRISM at 16"
metric = "val_loss_16"
arm = "gpt"
baseline = "prism"
better = "lower"
"""

ISSUE_SHAPE = """
base = "tiny-prism-cpu"          # a shipped config name or a path
seeds = [0, 1, 2]

[set.run]                        # overrides for every run
max_iters = 300

[arms.prism-pi.model.prism]      # one table per arm: its overrides, by config section
freq_multiplier = "pi"

[arms.prism-m1.model.prism]
freq_multiplier = 1.0
"""


def test_the_issue_shape_expands_to_arms_times_seeds(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text(ISSUE_SHAPE)
    (exp,) = load_experiments(path)
    assert exp.name == "exp" and exp.arms == ["prism-pi", "prism-m1"] and exp.seeds == [0, 1, 2]
    assert len(exp.runs) == 6
    pi = [r for r in exp.runs if r.arm == "prism-pi"]
    assert [r.config.run.seed for r in pi] == [0, 1, 2]
    assert all(r.config.run.max_iters == 300 for r in exp.runs)
    assert {r.config.model.prism.freq_multiplier for r in exp.runs} == {"pi", 1.0}
    assert len({r.identity for r in exp.runs}) == 6  # seed and arm both change what a run computes
    assert all(r.name == f"{r.arm}-s{r.seed}-{r.identity}" for r in exp.runs)


def test_identity_ignores_where_a_run_writes_but_not_what_it_computes(tmp_path):
    (exp,) = load_experiments(write_experiment(tmp_path))
    run = exp.runs[0]
    before = identity(run.config, run.data_source)
    run.config.run.out_dir, run.config.run.progress = "/elsewhere", False
    assert identity(run.config, run.data_source) == before
    run.config.optim.lr *= 2
    assert identity(run.config, run.data_source) != before


def test_grid_axes_multiply_arms_and_name_groups(tmp_path):
    path = write_experiment(tmp_path, extra='[grid]\n"optim.lr" = [1e-3, 1e-2]\n"model.dropout" = [0.0, 0.1]\n')
    text = path.read_text().replace('arm = "prism"\n', 'arm = "prism/lr=0.001/dropout=0.0"\n').replace(
        'baseline = "gpt"', 'baseline = "gpt/lr=0.001/dropout=0.0"')
    path.write_text(text)
    (exp,) = load_experiments(path)
    assert len(exp.groups) == 2 * 2 * 2 and len(exp.runs) == 2 * 2 * 2 * 2
    assert "gpt/lr=0.01/dropout=0.1" in exp.groups
    run = next(r for r in exp.runs if r.group == "gpt/lr=0.01/dropout=0.1")
    assert run.config.optim.lr == 0.01 and run.config.model.dropout == 0.1 and run.config.model.attention == "gpt"


def test_a_suite_shares_runs_with_the_same_config(tmp_path):
    write_experiment(tmp_path, name="a.toml")
    other = tmp_path / "b.toml"
    other.write_text(write_experiment(tmp_path, name="tmp.toml").read_text().replace(
        "[arms.gpt]", '[arms.m1.model]\nfreq_multiplier = 1.0\n[arms.gpt]'))
    suite = tmp_path / "suite.toml"
    suite.write_text('include = ["a.toml", "b.toml"]\n')
    experiments = load_experiments(suite)
    assert [e.name for e in experiments] == ["a", "b"]
    layout = plan(experiments)
    assert len(layout["runs"]) == 6  # a's 4, plus b's two m1 runs; b's prism and gpt are a's
    folders_a = {r["folder"] for r in layout["experiments"]["a"]["runs"]}
    folders_b = {r["folder"] for r in layout["experiments"]["b"]["runs"]}
    assert len(folders_a & folders_b) == 4


GATE = '\n[[gates]]\nname = "g"\nmetric = "val_loss_32"\narm = "gpt"\nabove = 0.5\n'


def test_a_gate_loads_and_travels_in_the_plan(tmp_path):
    path = write_experiment(tmp_path, extra=GATE.replace('arm = "gpt"', 'arm = ["gpt", "prism"]'))
    (exp,) = load_experiments(path)
    assert exp.gates[0].arms == ["gpt", "prism"] and exp.gates[0].above == 0.5
    assert plan([exp])["experiments"]["two"]["gates"] == [
        {"name": "g", "metric": "val_loss_32", "arm": ["gpt", "prism"], "above": 0.5, "below": None}]
    paired_gate = GATE.replace('arm = "gpt"', 'arm = "prism"\nbaseline = "gpt"')
    path = write_experiment(tmp_path, name="paired.toml", extra=paired_gate)
    (paired,) = load_experiments(path)
    assert plan([paired])["experiments"][paired.name]["gates"][0]["baseline"] == "gpt"


@pytest.mark.parametrize("edit, message", [
    (lambda t: "bogus = 1\n" + t, "unknown key 'bogus'"),
    (lambda t: t + GATE.replace('above = 0.5', 'above = 0.5\nside = 1'), "unknown gate key 'side'"),
    (lambda t: t + GATE.replace('above = 0.5', 'above = 0.5\nbelow = 0.9'), "exactly one finite bound"),
    (lambda t: t + GATE.replace('above = 0.5', ''), "exactly one finite bound"),
    (lambda t: t + GATE.replace('arm = "gpt"', 'arm = ["gpt", "gtp"]'), "gate 'g' names unknown arm"),
    (lambda t: t + GATE.replace('arm = "gpt"', 'arm = "gpt"\nbaseline = "gtp"'), "baseline 'gtp' must be another"),
    (lambda t: t + GATE.replace('arm = "gpt"', 'arm = "gpt"\nbaseline = "gpt"'), "baseline 'gpt' must be another"),
    (lambda t: t + GATE.replace('metric = "val_loss_32"', 'metric = "val_loss_99"'),
     "gate 'g': metric 'val_loss_99' is not a column"),
    (lambda t: t + "\nbogus = 1\n", "unknown verdict key 'bogus'"),
    (lambda t: t.replace("[arms.prism]", "[arms.prism.model]\nno_such_key = 1\n"), "no_such_key"),
    (lambda t: t.replace('baseline = "gpt"', 'baseline = "gtp"'), "unknown arm 'gtp'"),
    (lambda t: t.replace('base = "tiny-prism-cpu"', 'base = "no-such-config"'), "config file not found"),
    (lambda t: t.replace("seeds = [0, 1]", "seeds = [0, 0]"), "seeds must be"),
    (lambda t: t.replace("[evaluate]", "[evaluate]\nwindows = 3"), "unknown config key 'evaluate.windows'"),
    (lambda t: t.replace('better = "lower"', 'better = "less"'), "better must be"),
    (lambda t: t.replace("max_iters = 8", "max_iters = 0"), "run.max_iters must be >= 1"),
    (lambda t: t.replace("[evaluate]", "[grid]\nlr = [1]\n[evaluate]"), "'section.key'"),
    # a verdict metric the runs will not produce: refused when the file loads, before any training
    (lambda t: t.replace('metric = "val_loss_32"', 'metric = "val_los_32"'), "'val_los_32' is not a column"),
    (lambda t: t.replace('metric = "val_loss_32"', 'metric = "val_loss_64"'), "'val_loss_64' is not a column"),
    (lambda t: t.replace('metric = "val_loss_32"\narm = "prism"\nbaseline = "gpt"',
                         'metric = "stream_diff_median_lag"\narm = "gpt"\nbaseline = "prism"'),
     "arm 'gpt' produces"),  # GPT has one stream: no stream difference
    (lambda t: t.replace('better = "lower"', 'better = "lower"\nprimary = true') + VERDICT2.replace(
        "better", "primary = true\nbetter"), "2 verdicts are marked primary"),
    (lambda t: t.replace('better = "lower"', 'test = "equivalence"'), "needs a margin > 0"),
    (lambda t: t.replace('better = "lower"', 'test = "equivalence"\nmargin = -1'), "needs a margin > 0"),
    (lambda t: t.replace('better = "lower"', 'better = "lower"\nsmallest_effect = 0'),
     "smallest_effect must be a number > 0"),
    (lambda t: t.replace('better = "lower"', 'better = "lower"\nexpected_sd = nan'),
     "expected_sd must be a number > 0"),
    (lambda t: t.replace('better = "lower"', 'test = "same"'), "test must be 'difference' or 'equivalence'"),
    (lambda t: "min_seeds = 1\n" + t, "min_seeds must be an integer >= 2"),
    (lambda t: t.replace('baseline = "gpt"', 'baseline = "prism"'), "compares 'prism' with itself"),
    (lambda t: t.replace("[evaluate]", "[grid]\n\"model.prism.nope\" = [1, 2]\n[evaluate]"), "nope"),
    (lambda t: t.replace("head_windows = 4", "head_windows = 0").replace('metric = "val_loss_32"',
                                                                          'metric = "signal_median_lag"'),
     "'signal_median_lag' is not a column"),
])
def test_bad_experiment_files_are_one_line_errors(tmp_path, edit, message):
    path = write_experiment(tmp_path)
    path.write_text(edit(path.read_text()))
    with pytest.raises(PrismError, match=message) as info:
        load_experiments(path)
    assert "\n" not in str(info.value)


def test_missing_file_and_self_inclusion(tmp_path):
    with pytest.raises(PrismError, match="experiment file not found"):
        load_experiments(tmp_path / "nope.toml")
    suite = tmp_path / "loop.toml"
    suite.write_text('include = ["loop.toml"]\n')
    with pytest.raises(PrismError, match="includes itself"):
        load_experiments(suite)


def test_shipped_claim_files_load_and_name_every_claim():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "experiments"
    for scale in ("tiny", "sample", "paper"):
        experiments = load_experiments(root / f"claims-{scale}.toml")
        assert [e.name.split("-")[0] for e in experiments] == ["c1", "c2", "c3", "c4", "c5", "c6", "c7"]
        assert all(e.verdicts for e in experiments)
        assert all(e.expected_minutes for e in experiments)
        for e in experiments:  # pre-registered: one primary verdict per claim, and enough seeds to decide it
            assert sum(v.primary for v in e.verdicts) == 1, e.name
            assert len(e.seeds) >= e.min_seeds == 5, e.name


def test_every_scale_of_a_claim_holds_the_tiny_files_arms_and_verdicts():
    """The -sample and -paper files extend the -tiny one: a control added to a claim reaches every scale."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "experiments"
    tiny = {e.name.rsplit("-", 1)[0]: e for e in load_experiments(root / "claims-tiny.toml")}
    for scale, base in (("sample", "tiny-prism-cpu"), ("paper", "prism-50m-tinystories")):
        for e in load_experiments(root / f"claims-{scale}.toml"):
            t = tiny[e.name.rsplit("-", 1)[0]]
            assert e.arms == t.arms and e.groups == t.groups, e.name
            assert [vars(v) for v in e.verdicts] == [vars(v) for v in t.verdicts], e.name
            assert e.data_source is None and e.source["base"] == base and e.name.endswith(scale)
            assert len({r.config.run.max_iters for r in e.runs}) == 1
            assert e.runs[0].config.run.max_iters == (600 if scale == "sample" else 20000)
            if scale == "paper":  # every arm at the paper's size
                assert {r.config.model.n_embd for r in e.runs} == {512}, e.name


def test_extends_merges_tables_replaces_values_and_names_its_own_scale(tmp_path):
    parent = write_experiment(tmp_path)
    child = tmp_path / "child.toml"
    child.write_text('extends = "two.toml"\nseeds = [0, 1, 2]\ndata = ""\n'
                     '[set.run]\nmax_iters = 6\n[set.data]\ndir = "elsewhere"\n[arms.gpt.model]\nn_layer = 1\n')
    (e,) = load_experiments(child)
    (p,) = load_experiments(parent)
    assert e.name == "child" and p.name != "child"  # the name is never inherited
    assert e.seeds == [0, 1, 2] and e.data_source is None and p.data_source == "embedded:150"
    gpt = next(r for r in e.runs if r.arm == "gpt")
    assert gpt.config.run.max_iters == 6 and gpt.config.run.eval_interval == 4  # merged key by key
    assert gpt.config.model.n_layer == 1 and gpt.config.model.n_embd == 32 and gpt.config.model.attention == "gpt"
    assert gpt.config.data.dir.endswith("elsewhere")
    assert [v.claim for v in e.verdicts] == [v.claim for v in p.verdicts]


def test_extends_refuses_itself_a_suite_and_a_missing_parent(tmp_path):
    write_experiment(tmp_path)
    loop = tmp_path / "loop.toml"
    loop.write_text('extends = "loop.toml"\n')
    with pytest.raises(PrismError, match="extends itself"):
        load_experiments(loop)
    (tmp_path / "suite.toml").write_text('include = ["two.toml"]\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "suite.toml"\n')
    with pytest.raises(PrismError, match="a suite; extend one experiment file"):
        load_experiments(child)
    child.write_text('extends = "gone.toml"\n')
    with pytest.raises(PrismError, match="experiment file not found"):
        load_experiments(child)


def test_identity_hashes_resolved_values_and_leaves_late_keys_at_their_defaults(tmp_path):
    """Two configs that compute the same thing share an identity; earlier sweep folders keep their names."""
    (exp,) = load_experiments(write_experiment(tmp_path))
    cfg = exp.runs[0].config
    base = identity(cfg, "embedded:100")
    explicit = copy.deepcopy(cfg)
    explicit.optim.lr_decay_iters = 0 if cfg.optim.lr_decay_iters == cfg.run.max_iters else cfg.run.max_iters
    assert identity(explicit, "embedded:100") == base  # 0 resolves to max_iters: the same schedule
    late = copy.deepcopy(cfg)
    late.model.mlp, late.model.position_embedding = "gelu", "learned"  # the defaults: not hashed
    assert identity(late, "embedded:100") == base
    late.model.position_embedding = "none"
    assert identity(late, "embedded:100") != base


def test_the_keys_that_change_no_number_agree():
    from prism_lm.config import IDENTITY_EXCLUDED_KEYS, RESUME_SAFE_KEYS

    assert IDENTITY_EXCLUDED_KEYS - {"data.dir"} <= RESUME_SAFE_KEYS


def test_verdict_metrics_that_the_runs_produce_load(tmp_path):
    path = write_experiment(tmp_path, extra="""
[[verdicts]]
claim = "signal heads reach further"
metric = "stream_diff_mass_beyond_far"
arm = "prism"

[[verdicts]]
claim = "untrained diversity"
metric = "init_noise_diversity"
arm = "prism"

[[verdicts]]
claim = "recall of names"
metric = "recall_loss_name"
arm = "gpt"
baseline = "prism"
""")
    (exp,) = load_experiments(path)
    assert [v.metric for v in exp.verdicts][1:] == ["stream_diff_mass_beyond_far", "init_noise_diversity",
                                                    "recall_loss_name"]


def test_the_white_box_claim_is_pre_registered_at_every_scale_with_parameters_matched():
    from pathlib import Path

    import torch

    from prism_lm.model import PrismLM

    root = Path(__file__).resolve().parents[2] / "experiments"
    (tiny,) = load_experiments(root / "c8-whitebox-tiny.toml")
    (primary,) = [v for v in tiny.verdicts if v.primary]
    assert (primary.arm, primary.baseline, primary.null, primary.better) == ("prism-ista", "prism", 0.10, "lower")
    for scale in ("sample", "paper"):
        (e,) = load_experiments(root / f"c8-whitebox-{scale}.toml")
        assert e.arms == tiny.arms and [vars(v) for v in e.verdicts] == [vars(v) for v in tiny.verdicts]
        counts = {}
        for r in e.runs:
            cfg = r.config.model
            cfg.vocab_size = cfg.vocab_size or 384
            with torch.device("meta"):
                counts[r.arm] = PrismLM(cfg).num_params()
        for arm in ("gpt-rope", "prism-ista", "crate"):  # matched within 5% by depth; the l9 arm brackets below
            assert abs(counts[arm] / counts["prism"] - 1) < 0.05, (scale, arm)
        assert counts["prism-ista-l9"] < counts["prism"] < counts["prism-ista"]


def test_data_may_list_sources_prepared_together_into_one_folder_and_a_bad_list_is_one_line(tmp_path):
    """data = [A, B]: one source "A + B" (its own identity and folder), prepared by the sweep as
    ``prism data prepare --source A --source B`` would; anything but strings is refused."""
    from prism_lm.data.shards import ShardSet, read_manifest
    from prism_lm.experiments.runner import _prepare_data
    from prism_lm.experiments.sweep_dir import SweepDir

    tasks = ["synthetic:induction:20:length=4,vocab=16", "synthetic:mqar:20:pairs=2,queries=1,vocab=8"]
    text = write_experiment(tmp_path).read_text(encoding="utf-8")
    mixed = tmp_path / "mixed.toml"
    mixed.write_text(text.replace('data = "embedded:150"', f"data = {tasks!r}".replace("'", '"')), encoding="utf-8")
    (e,) = load_experiments(mixed)
    assert e.data_source == "synthetic:induction:20:length=4,vocab=16 + synthetic:mqar:20:pairs=2,queries=1,vocab=8"
    assert {r.data_source for r in e.runs} == {e.data_source}
    one = tmp_path / "one.toml"
    one.write_text(text.replace('data = "embedded:150"', f'data = "{tasks[0]}"'), encoding="utf-8")
    assert {r.identity for r in e.runs}.isdisjoint(r.identity for r in load_experiments(one)[0].runs)
    sweep = SweepDir(tmp_path / "out")
    _prepare_data([e], sweep, log=lambda line: None)
    folder = sweep.data_dir(e.data_source)
    assert folder.name == "synthetic-induction-20-length=4,vocab=16+synthetic-mqar-20-pairs=2,queries=1,vocab=8"
    assert [s["spec"] for s in read_manifest(folder)["inputs"]["sources"]] == tasks
    assert {r.config.data.dir for r in e.runs} == {str(folder)}
    kinds = set(ShardSet(folder, "train").annotations()[:, 2].tolist())
    assert len(kinds) == 2  # both tasks' answers, each of its own kind
    for bad in ("[]", '["embedded:150", 3]', "3"):
        mixed.write_text(text.replace('data = "embedded:150"', f"data = {bad}"), encoding="utf-8")
        with pytest.raises(PrismError, match=r"data must be a source string such as 'embedded:6000' or a list of them"):
            load_experiments(mixed)
