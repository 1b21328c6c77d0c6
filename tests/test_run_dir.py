"""RunDir: the one owner of a run directory's layout."""

from prism_lm.checkpoint import save_model
from prism_lm.config import load_train_config
from prism_lm.model import PrismLM
from prism_lm.run_dir import RunDir
from tests.conftest import tiny_config


def _step(run: RunDir, step: int, complete: bool = True):
    path = run.step_dir(step)
    save_model(PrismLM(tiny_config()), path)
    if complete:
        (path / "train_state.json").write_text("{}")
    return path


def test_layout_and_step_checkpoints(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.steps() == [] and run.newest() is None and run.model_checkpoint() is None and not run.holds_run()
    first, second = _step(run, 4), _step(run, 12)
    _step(run, 16, complete=False)  # a model checkpoint without training state is no step checkpoint
    (run.checkpoints_dir / ".step-000020.tmp-abc").mkdir()  # a temporary directory left by a kill
    assert run.step_dir(12).name == "step-000012" and run.step_dir(12) == second
    assert run.steps() == [first, second] and run.newest() == second and run.holds_run()
    assert run.model_checkpoint() == second  # no best yet: the newest step
    run.replace_best(first)
    assert run.model_checkpoint() == run.best and (run.best / "model.safetensors").is_file()
    run.replace_best(second)  # swapped by renames, no leftovers
    assert sorted(p.name for p in run.checkpoints_dir.iterdir() if p.name.startswith(".best")) == []
    run.prune(keep=1)
    assert run.steps() == [second]
    assert RunDir.of_checkpoint(second) is None  # no metrics.jsonl: not a run
    run.metrics_path.write_text("")
    assert RunDir.of_checkpoint(second).path == run.path


def test_config_round_trip(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.read_config() is None
    cfg = load_train_config("tiny-prism-cpu", ["run.seed=7", "model.vocab_size=384"])
    run.write_config(cfg)
    assert run.read_config() == cfg
