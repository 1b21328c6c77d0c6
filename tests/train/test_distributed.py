"""torchrun with 2 gloo processes on CPU gives the losses of 1 process with the same global batch,
and a 2-process run resumed from a mid-run checkpoint repeats its losses exactly (DDP and FSDP2)."""

import shutil
import subprocess
import sys

import pytest

from prism_lm.train.metrics import read_metrics
from tests.train.helpers import cli_env, prepare_tiny, run_cli, tiny_overrides

TOLERANCE = 1e-4  # relative; fp32 gradient sums in another order, over 8 steps


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("data") / "d")


def _sets(data, out, parallel):
    sets = tiny_overrides(data, out, **{"run.max_iters": 8, "model.dropout": 0.0, "run.grad_accum": 2,
                                         "run.parallel": f'"{parallel}"', "run.checkpoint_interval": 4})
    return [a for s in sets for a in ("--set", s)]


def _losses(run):
    return [r["train_loss"] for r in read_metrics(run / "metrics.jsonl") if r["type"] == "iter"]


def _torchrun(args):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "prism_lm.cli", *args], capture_output=True, text=True, env=cli_env(), timeout=300)


def _torchrun_resumed_copy(run, copy, data, parallel):
    """Copy a finished run, drop its last checkpoint (step 8), and resume from step 4 in 2 processes."""
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step-000008")
    return _torchrun(["train", "prism-50m-tinystories", *_sets(data, copy, parallel), "--resume", "auto"])


@pytest.mark.parametrize("parallel", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_match_one(data, tmp_path, parallel):
    single = run_cli(["train", "prism-50m-tinystories", *_sets(data, tmp_path / "one", parallel)])
    assert single.returncode == 0, single.stderr
    multi = _torchrun(["train", "prism-50m-tinystories", *_sets(data, tmp_path / "two", parallel)])
    assert multi.returncode == 0, multi.stderr[-3000:]
    resumed = _torchrun_resumed_copy(tmp_path / "two", tmp_path / "resumed", data, parallel)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "two")  # bitwise, steps 5-8 recomputed
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 8
    assert one[0] != one[-1]
    for a, b in zip(one, two, strict=True):
        assert abs(a - b) <= TOLERANCE * abs(a), (one, two)
    # the checkpoint written by the 2-process run loads as an ordinary model
    import prism_lm

    prism_lm.load_model(tmp_path / "two" / "checkpoints" / "step-000008")
