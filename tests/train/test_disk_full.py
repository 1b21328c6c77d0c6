"""A full disk at each write a training or a preparation makes, injected where the write happens
(the real code path, with the OS error a full disk raises: ENOSPC, which for a write on an open file
carries no path). Each is a one-line error naming the file, exit status 2, nothing finished lost,
and ``--resume auto`` afterwards gives the records of an uninterrupted run.

A real full disk (a 2 MB tmpfs) is in ``test_faults.py`` for the checkpoint save (root only).
"""

import errno
import shutil

import pytest

from prism_lm import cli, files
from prism_lm.checkpoint.training import verify_training_checkpoint
from prism_lm.data import prepare as prepare_module
from prism_lm.run_dir import RunDir, read_metrics
from prism_lm.train import metrics
from tests.helpers import records_without_timing, train_argv

STEPS = 12


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


class FullAfter:
    """A file that takes ``room`` writes, then fails as a full disk does (everything else is the file's)."""

    def __init__(self, real, room: int):
        self.real, self.room = real, room

    def write(self, text):
        if self.room <= 0:
            raise disk_full()
        self.room -= 1
        return self.real.write(text)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def _train_args(data, out, *extra):
    return [*train_argv("tiny-prism-cpu", data, out, **{"run.max_iters": STEPS, "run.checkpoint_interval": 6,
                                                         "run.eval_interval": 6, "run.keep_checkpoints": 3}), *extra]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    assert cli.main(_train_args(data, run)) == 0
    return records_without_timing(run)


def _one_line_error(capsys, *parts):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    for part in parts:
        assert part in errors[0], errors[0]
    return errors[0]


def test_disk_full_while_copying_best(data, tmp_path, reference, capsys, monkeypatch):
    real = shutil.copytree
    calls = {"n": 0}

    def copytree(src, dst, **kw):  # the second copy of best runs out of room after its first file
        calls["n"] += 1
        if calls["n"] < 2:
            return real(src, dst, **kw)
        copied = []

        def copy(s, d, **_):
            if copied:
                raise disk_full()
            copied.append(s)
            return shutil.copy2(s, d)

        return real(src, dst, copy_function=copy)

    monkeypatch.setattr("prism_lm.run_dir.shutil.copytree", copytree)
    run = tmp_path / "run"
    assert cli.main(_train_args(data, run)) == 2
    _one_line_error(capsys, "could not copy step-000012", "best", "No space left on device", "intact")
    kept = RunDir(run)
    assert verify_training_checkpoint(kept.best) is None  # the previous best, whole
    assert (kept.best / "config.json").read_text().count('"step": 6')
    assert not (kept.checkpoints_dir / ".best.tmp").exists()
    monkeypatch.undo()
    assert cli.main(_train_args(data, run, "--resume", "auto")) == 0
    assert records_without_timing(run) == reference
    assert '"step": 12' in (kept.best / "config.json").read_text()


def test_disk_full_while_writing_the_lock_file(data, tmp_path, capsys, monkeypatch):
    real_open = open

    def full_lock(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return FullAfter(f, 0) if str(path).endswith(".lock") else f

    monkeypatch.setattr(files, "open", full_lock, raising=False)
    run = tmp_path / "run"
    assert cli.main(_train_args(data, run)) == 2
    _one_line_error(capsys, "could not write the lock file", str(run / ".lock"), "No space left on device")
    assert not (run / ".lock").exists() and not (run / "metrics.jsonl").exists()


def test_disk_full_at_a_metrics_append(data, tmp_path, reference, capsys, monkeypatch):
    real_open = open
    appends = {"n": 0}

    def full_after_nine(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if mode != "a":
            return f
        appends["n"] += 1
        return FullAfter(f, 1 if appends["n"] < 10 else 0)

    monkeypatch.setattr(metrics, "open", full_after_nine, raising=False)
    run = tmp_path / "run"
    assert cli.main(_train_args(data, run)) == 2
    _one_line_error(capsys, "could not write the metrics log", str(run / "metrics.jsonl"), "No space left on device",
                    "--resume auto continues")
    assert len(read_metrics(run / "metrics.jsonl")) == 9  # what was written stays
    assert verify_training_checkpoint(RunDir(run).newest()) is None
    monkeypatch.undo()
    assert cli.main(_train_args(data, run, "--resume", "auto")) == 0
    assert records_without_timing(run) == reference


def test_disk_full_while_preparing_data(tmp_path, capsys, monkeypatch):
    real_open = open

    def full_shard(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if mode != "wb":
            return f
        return FullAfter(f, 1)  # room for the header

    monkeypatch.setattr(prepare_module, "open", full_shard, raising=False)
    out = tmp_path / "prepared"
    assert cli.main(["data", "prepare", "--source", "embedded:40", "--out", str(out)]) == 2
    _one_line_error(capsys, f"could not write data directory {out}", "No space left on device", "nothing was written")
    assert not out.exists() and not list(tmp_path.glob(".prepared.tmp-*"))
