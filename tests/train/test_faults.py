"""Fault injection: kill -9 at random moments (mid-save too), SIGTERM/SIGINT between log steps,
damaged checkpoints, a concurrent writer, a full disk. After each, resuming gives the metrics of an
uninterrupted run (timing fields aside) and nothing that was finished is lost.

Every case here starts the CLI in subprocesses (two or three runs each), so all are marked ``slow``:
``.ci/run`` runs them after the default suite. By default, ``test_resume.py``'s SIGTERM case and
``test_disk_full.py``'s in-process full-disk cases stand for this file.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest

from prism_lm.checkpoint.training import verify_training_checkpoint
from prism_lm.run_dir import RunDir
from tests.helpers import records_without_timing, run_cli, start_cli, train_argv, wait_for

STEPS = 40


def _args(data, out, sampler="random", **extra):
    return train_argv("tiny-prism-cpu", data, out, **{
        "run.max_iters": STEPS, "run.checkpoint_interval": 5, "run.log_interval": 3, "run.eval_interval": 10,
        "run.keep_checkpoints": 3, "model.n_embd": 64, "run.batch_size": 8, "optim.lr_decay_iters": STEPS,
        "data.sampler": f'"{sampler}"', **extra})


def _resume_until_done(data, run, sampler):
    for _ in range(5):
        done = run_cli(_args(data, run, sampler) + ["--resume", "auto"])
        assert done.returncode == 0, done.stderr
        if "done:" in done.stdout or "already finished" in done.stdout:
            return done
    raise AssertionError("the run never finished")


_REFERENCE = {}


def _reference(data, tmp_path_factory, sampler):
    if sampler not in _REFERENCE:
        run = tmp_path_factory.mktemp(f"ref-{sampler}") / "run"
        t0 = time.time()
        proc = run_cli(_args(data, run, sampler))
        assert proc.returncode == 0, proc.stderr
        _REFERENCE[sampler] = (records_without_timing(run), time.time() - t0)
    return _REFERENCE[sampler]


def _kill_after_checkpoint(data, run, step: int, sampler="random"):
    """Start a run and kill -9 it as soon as its checkpoint of ``step`` exists."""
    proc = start_cli(_args(data, run, sampler))
    assert wait_for(lambda: (run / "checkpoints" / f"step-{step:06d}").exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _kill_and_resume(data, tmp_path, tmp_path_factory, sampler, delay):
    expected, _ = _reference(data, tmp_path_factory, sampler)
    run = tmp_path / "run"
    proc = start_cli(_args(data, run, sampler))
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _resume_until_done(data, run, sampler)
    assert records_without_timing(run) == expected
    assert not list((run / "checkpoints").glob(".*tmp*"))  # no leftovers once resumed


@pytest.mark.slow
def test_kill9_after_the_first_checkpoint_then_resume_matches(data, tmp_path, tmp_path_factory):
    expected, _ = _reference(data, tmp_path_factory, "random")
    run = tmp_path / "run"
    _kill_after_checkpoint(data, run, 10)
    _resume_until_done(data, run, "random")
    assert records_without_timing(run) == expected


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["random", "sequential"])
@pytest.mark.parametrize("trial", range(4))
def test_kill9_at_random_moments(data, tmp_path, tmp_path_factory, sampler, trial):
    _, seconds = _reference(data, tmp_path_factory, sampler)
    delay = random.Random(f"{sampler}{trial}").uniform(0.3, 1.5 + seconds)  # start-up, mid-run, mid-save, never
    _kill_and_resume(data, tmp_path, tmp_path_factory, sampler, delay)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["random", "sequential"])
def test_kill9_mid_save(data, tmp_path, tmp_path_factory, sampler):
    """Killed while a checkpoint is being written (its temporary directory exists): nothing breaks."""
    expected, _ = _reference(data, tmp_path_factory, sampler)
    for attempt in range(8):
        run = tmp_path / f"run{attempt}"
        proc = start_cli(_args(data, run, sampler))
        caught = wait_for(lambda r=run: any((r / "checkpoints").glob(".step-*.tmp-*")), proc, poll=0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if caught:
            break
    else:
        pytest.skip("never caught a checkpoint mid-write in 8 tries")
    _resume_until_done(data, run, sampler)
    assert records_without_timing(run) == expected
    assert not list((run / "checkpoints").glob(".step-*.tmp-*"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_between_log_steps_leaves_the_log_of_an_uninterrupted_run(data, tmp_path, tmp_path_factory, sig):
    expected, _ = _reference(data, tmp_path_factory, "random")
    run = tmp_path / "run"
    proc = start_cli(_args(data, run))
    assert wait_for(lambda: (run / "checkpoints" / "step-000005").exists(), proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    stopped = int(out.split(" at step ")[1].split(";")[0])
    _resume_until_done(data, run, "random")
    assert records_without_timing(run) == expected, f"stopped at step {stopped}"


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["drop state json", "truncate weights", "zero weights", "garble state json"])
def test_resume_falls_back_to_the_newest_good_checkpoint(data, tmp_path, tmp_path_factory, damage):
    expected, _ = _reference(data, tmp_path_factory, "random")
    run = tmp_path / "run"
    _kill_after_checkpoint(data, run, 15)
    newest = RunDir(run).newest()
    if damage == "drop state json":
        (newest / "train_state.json").unlink()
    elif damage == "garble state json":
        (newest / "train_state.json").write_text('{"format": "prism-lm/train')
    else:
        weights = newest / "model.safetensors"
        size = weights.stat().st_size
        weights.write_bytes(b"" if damage == "truncate weights" else bytes(size))
    resumed = run_cli(_args(data, run) + ["--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"warning: skipping checkpoint {newest}" in resumed.stderr
    assert (newest.parent / f".rejected-{newest.name}").is_dir()  # moved aside, not deleted
    assert records_without_timing(run) == expected


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over(data, tmp_path):
    run = tmp_path / "run"
    first = start_cli(_args(data, run))
    assert wait_for(lambda: (run / ".lock").exists() and (run / ".lock").read_text().startswith("pid"), first)
    second = run_cli(_args(data, run) + ["--resume", "auto"])
    assert second.returncode == 2
    assert second.stderr.startswith(f"error: run directory {run} is in use by pid {first.pid} on ")
    assert second.stderr.count("\n") == 1
    first.send_signal(signal.SIGKILL)
    first.wait()
    third = run_cli(_args(data, run) + ["--resume", "auto"])
    assert third.returncode == 0, third.stderr
    assert f"taking over the lock on run directory {run} left by pid {first.pid}" in third.stderr
    assert not (run / ".lock").exists()  # released cleanly


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a tmpfs needs root")
@pytest.mark.slow
def test_disk_full_while_saving_is_one_line_and_keeps_the_previous_checkpoint(data, tmp_path):
    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        proc = run_cli(_args(data, disk / "run", **{"run.keep_checkpoints": 100, "run.checkpoint_interval": 1}))
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "could not write checkpoint" in lines[0] and "No space left" in lines[0], lines
        run = RunDir(disk / "run")
        assert run.steps() and verify_training_checkpoint(run.newest()) is None
        assert not list(run.checkpoints_dir.glob(".step-*.tmp-*"))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


@pytest.mark.slow
def test_partial_last_metrics_line_is_dropped_on_resume(data, tmp_path, tmp_path_factory):
    expected, _ = _reference(data, tmp_path_factory, "random")
    run = tmp_path / "run"
    _kill_after_checkpoint(data, run, 10)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"type": "iter", "iter": 9')  # a write cut short by the kill
    resumed = _resume_until_done(data, run, "random")
    assert "dropped its partial last line" in resumed.stderr
    assert records_without_timing(run) == expected
    json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
