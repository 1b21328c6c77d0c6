"""Exact resume after SIGKILL, graceful stop on SIGTERM, through the real CLI in subprocesses."""

import signal

import pytest

from prism_lm.run_dir import read_metrics
from tests.helpers import run_cli, start_cli, train_argv, wait_for

STEPS = 60


def _args(data, out):
    return train_argv("prism-50m-tinystories", data, out, **{
        "run.max_iters": STEPS, "run.checkpoint_interval": 5, "run.eval_interval": 20, "run.keep_checkpoints": 3,
        "model.n_embd": 64, "run.batch_size": 8})


def _losses(run):
    return [(r["iter"], r["train_loss"]) for r in read_metrics(run / "metrics.jsonl") if r["type"] == "iter"]


def _evals(run):
    return [(r["iter"], r["val_loss"]) for r in read_metrics(run / "metrics.jsonl") if r["type"] == "eval"]


@pytest.mark.slow  # kill -9 through the CLI: three subprocess runs
def test_sigkill_then_resume_is_bitwise_identical(data, tmp_path):
    full = run_cli(_args(data, tmp_path / "full"))
    assert full.returncode == 0, full.stderr

    proc = start_cli(_args(data, tmp_path / "killed"))
    assert wait_for((tmp_path / "killed" / "checkpoints" / "step-000010").exists, proc, timeout=60), proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(i for i, _ in _losses(tmp_path / "killed"))
    assert killed_at < STEPS, "the run finished before it was killed; the test proved nothing"

    resumed = run_cli(_args(data, tmp_path / "killed") + ["--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr
    assert _losses(tmp_path / "killed") == _losses(tmp_path / "full")  # exact floats, every step
    assert _evals(tmp_path / "killed") == _evals(tmp_path / "full")
    assert len(_losses(tmp_path / "full")) == STEPS


def test_sigterm_saves_a_checkpoint_and_exits_zero(data, tmp_path):
    proc = start_cli(_args(data, tmp_path / "run"))
    assert wait_for((tmp_path / "run" / "checkpoints" / "step-000005").exists, proc, timeout=60), proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in out
    last = max(i for i, _ in _losses(tmp_path / "run"))
    assert last < STEPS
    assert (tmp_path / "run" / "checkpoints" / f"step-{last:06d}" / "train_state.json").is_file()


def test_resume_path_errors(data, tmp_path, capsys):
    from prism_lm.cli import main

    assert main(_args(data, tmp_path / "run") + ["--resume", str(tmp_path / "nope")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["train", "prism-50m-tinystories", "--set", "model.n_heads=3"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: unknown config key 'model.n_heads' (known: " + err.split("(known: ")[1].strip()
