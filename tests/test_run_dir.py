"""RunDir: the one owner of a run directory's layout."""

from prism_lm.checkpoint import save_model
from prism_lm.config import load_train_config
from prism_lm.model import PrismLM
from prism_lm.run_dir import RunDir
from tests.helpers import tiny_model_config


def _step(run: RunDir, step: int, complete: bool = True):
    path = run.step_dir(step)
    save_model(PrismLM(tiny_model_config()), path)
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


def test_a_prune_interrupted_mid_delete_leaves_no_half_step_and_is_cleaned_on_the_next_start(tmp_path, monkeypatch):
    import shutil

    import pytest

    run = RunDir(tmp_path / "run")
    steps = [_step(run, s) for s in (4, 8, 12)]
    real = shutil.rmtree

    def killed(path, *args, **kwargs):  # the kill lands after the state file went, before the weights
        (path / "train_state.json").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr("prism_lm.run_dir.shutil.rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        run.prune(keep=2)
    monkeypatch.setattr("prism_lm.run_dir.shutil.rmtree", real)
    assert run.steps() == steps[1:]  # every listed step is whole; the half-deleted one is out of sight
    assert not steps[0].exists() and (run.checkpoints_dir / ".pruning-step-000004").is_dir()
    run.clean_leftovers()
    assert not list(run.checkpoints_dir.glob(".pruning-*")) and run.steps() == steps[1:]


def test_what_a_rename_publishes_is_fsynced_first_and_its_folder_after(tmp_path, monkeypatch):
    import os

    from prism_lm.files import replace_json

    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "ckpt"
    save_model(PrismLM(tiny_model_config()), target)
    files = {str(p) for p in target.iterdir()}
    tmp_names = [s for s in synced if ".ckpt.tmp-" in s]
    assert {s.replace(s.split("/")[-2], "ckpt") for s in tmp_names if s.count("/") > str(tmp_path).count("/") + 1} \
        == files  # every file, under its temporary name, before the rename
    assert synced[-1] == str(tmp_path)  # the parent, after it
    synced.clear()
    replace_json(tmp_path / "x.json", {"a": 1}, "fmt")
    assert synced[0].endswith(f".x.json.tmp-{os.getpid()}") and synced[-1] == str(tmp_path)


def test_a_run_config_recorded_by_an_earlier_release_reads_the_same_without_a_notice(tmp_path, capsys):
    from prism_lm.config import _toml_scalar, dump_toml
    from prism_lm.model.config import LEGACY_KEYS

    cfg = load_train_config("tiny-prism-ista-cpu", ["model.prism.lambda_start=0.2"])
    text = dump_toml(cfg)
    old = text.split("[model.prism]")[0]  # the [model] table as an earlier release wrote it: flat keys
    sections = {"prism": cfg.model.prism, "ista": cfg.model.ista}
    flat = "".join(f"{key} = {_toml_scalar(getattr(sections[s], k))}\n" for key, (s, k) in LEGACY_KEYS.items())
    rest = text.split("[data]")[1]
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.config_path.write_text(old.rstrip() + "\n" + flat + "\n[data]" + rest)
    assert run.read_config() == cfg
    assert "warning" not in capsys.readouterr().err
