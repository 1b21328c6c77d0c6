"""A run whose only checkpoint fails verification is never silently restarted: --resume auto falls
back to a verified best, else refuses in one line with nothing changed; --resume never starts over
on purpose and keeps the old run; a run stopped before its first checkpoint is neither continued under
another config nor rewritten."""

import pytest

from prism_lm.cli import main
from prism_lm.errors import PrismError
from prism_lm.run_dir import RunDir
from prism_lm.train.loop import train
from tests.helpers import tiny_overrides, tiny_train_config

ONE_CHECKPOINT = {"run.max_iters": 8, "run.eval_interval": 4, "run.checkpoint_interval": 8,
                  "run.keep_checkpoints": 1, "optim.lr_decay_iters": 8}


def _damaged_run(data, run_path, damage_best: bool) -> RunDir:
    train(tiny_train_config(data, run_path, **ONE_CHECKPOINT))
    run = RunDir(run_path)
    (only,) = run.steps()
    (only / "train_state.json").write_text('{"format": "prism-lm/train')  # fails verification
    if damage_best:
        (run.best / "train_state.json").unlink()
    return run


def _snapshot(run: RunDir) -> tuple[str, str]:
    return run.metrics_path.read_text(), run.config_path.read_text()


def test_only_checkpoint_damaged_and_no_good_best_is_refused_changing_nothing(data, tmp_path, capsys):
    run = _damaged_run(data, tmp_path / "run", damage_best=True)
    before = _snapshot(run)
    args = ["train", "tiny-prism-cpu", *[f"--set={s}" for s in tiny_overrides(data, run.path, **ONE_CHECKPOINT)]]
    assert main([*args, "--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert "none of its checkpoints verifies" in err and "--resume never" in err and err.strip().count("\n") <= 1
    assert _snapshot(run) == before  # metrics.jsonl and config.toml as they were
    # --set on top: still refused, and config.toml is not overwritten
    assert main([*args, "--resume", "auto", "--set", "optim.lr=0.01", "--set", "run.max_iters=10"]) == 2
    assert _snapshot(run) == before


def test_only_checkpoint_damaged_resumes_from_a_verified_best(data, tmp_path, capsys):
    run = _damaged_run(data, tmp_path / "run", damage_best=False)
    records = run.metrics_path.read_text().count("\n")
    summary = train(tiny_train_config(data, run.path, **ONE_CHECKPOINT), resume="auto")
    assert "resuming from checkpoints/best" in capsys.readouterr().err
    assert summary.get("already_finished") or summary["step"] == 8
    assert run.metrics_path.read_text().count("\n") >= records  # nothing cut back to step 0
    with pytest.raises(PrismError, match="optim.lr is 0.01 but the run was started with 0.003"):
        train(tiny_train_config(data, run.path, **{**ONE_CHECKPOINT, "optim.lr": 0.01}), resume="auto")


def test_resume_never_starts_over_and_keeps_the_old_run(data, tmp_path, capsys):
    run = _damaged_run(data, tmp_path / "run", damage_best=True)
    old_metrics, old_config = _snapshot(run)
    summary = train(tiny_train_config(data, run.path, **ONE_CHECKPOINT), resume="never")
    assert summary["step"] == 8 and "kept in" in capsys.readouterr().err
    kept = run.path / "previous-1"
    assert (kept / "metrics.jsonl").read_text() == old_metrics and (kept / "config.toml").read_text() == old_config
    assert (kept / "checkpoints").is_dir() and RunDir(run.path).steps()
    with pytest.raises(PrismError, match="--resume never to start over"):
        train(tiny_train_config(data, run.path, **ONE_CHECKPOINT))


def test_a_run_stopped_before_its_first_checkpoint_is_not_relabelled_or_rewritten(data, tmp_path, capsys):
    import shutil

    train(tiny_train_config(data, tmp_path / "run", **ONE_CHECKPOINT))
    run = RunDir(tmp_path / "run")
    shutil.rmtree(run.checkpoints_dir)  # its records as a kill -9 before the first save leaves them
    old_metrics, old_config = _snapshot(run)
    other = tiny_train_config(data, run.path, **ONE_CHECKPOINT, **{"optim.lr": 0.01})
    with pytest.raises(PrismError, match="--resume: optim.lr is 0.01 but the run was started with 0.003"):
        train(other, resume="auto")
    assert _snapshot(run) == (old_metrics, old_config)  # nothing rewritten, nothing relabelled
    assert train(tiny_train_config(data, run.path, **ONE_CHECKPOINT), resume="auto")["step"] == 8
    assert "saved no checkpoint before it stopped; the run so far is kept in" in capsys.readouterr().err
    kept = run.path / "previous-1"
    assert (kept / "metrics.jsonl").read_text() == old_metrics and (kept / "config.toml").read_text() == old_config
