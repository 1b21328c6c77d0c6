"""Every bad input of issue 14 ends in one line naming the problem and a non-zero exit, or in a stated
warning; none leaves anything behind that blocks the corrected command."""

import pytest
import torch

from prism_lm.cli import main
from prism_lm.run_dir import read_metrics
from prism_lm.train.loop import train
from tests.helpers import prepare_tiny, tiny_train_config, train_argv


def _train_args(world, out, **extra):
    return train_argv("tiny-prism-cpu", world / "d", out, **extra)


CASES = {
    "beta1 out of range": (lambda w: _train_args(w, w / "r1", **{"optim.beta1": 2}), "optim.beta1 must be in [0, 1)"),
    "negative seed": (lambda w: _train_args(w, w / "r2", **{"run.seed": -1}), "run.seed must be in [0, 2^63)"),
    "unknown device": (lambda w: _train_args(w, w / "r3", **{"run.device": '"banana"'}), "run.device must be"),
    "negative weight decay": (lambda w: _train_args(w, w / "r4", **{"optim.weight_decay": -5}),
                              "optim.weight_decay must be a finite number >= 0"),
    "nan lambda": (lambda w: _train_args(w, w / "r5", **{"model.prism.lambda_start": "nan"}),
                   "config key 'model.prism.lambda_start' must be a finite number, got nan"),
    "out_dir is a file": (lambda w: _train_args(w, w / "a-file"), "exists and is a file"),
    "eval context 0": (lambda w: ["eval", str(w / "run"), "--data", str(w / "d"), "--context", "0"],
                       "argument --context: must be an integer in [1, 65,536], got 0"),
    "eval context -5": (lambda w: ["eval", str(w / "run"), "--data", str(w / "d"), "--context", "-5"],
                        "argument --context: must be an integer in [1, 65,536], got -5"),
    "eval batch 0": (lambda w: ["eval", str(w / "run"), "--data", str(w / "d"), "--batch-size", "0"],
                     "argument --batch-size: must be an integer in [1, 65,536), got 0"),
    "analyze layer 99": (lambda w: ["analyze", str(w / "run"), "--data", str(w / "d"), "--out", str(w / "rep"),
                                    "--layer", "99"],
                         "--layer (this model's layers) must be an integer in [0, 2), got 99"),
    "sample negative tokens": (lambda w: ["sample", str(w / "run"), "--max-new-tokens", "-3"],
                               "argument --max-new-tokens: must be an integer in [1, 100,000], got -3"),
    "sample on a missing GPU": (lambda w: ["sample", str(w / "run"), "--device", "cuda"], "CUDA is not available"),
    "sample unknown device": (lambda w: ["sample", str(w / "run"), "--device", "banana"], "unknown device"),
    "prepare into a file": (lambda w: ["data", "prepare", "--source", "embedded:5", "--out", str(w / "a-file")],
                            "exists and is a file"),
    "negative temperature": (lambda w: ["sample", str(w / "run"), "--temperature", "-1"],
                             "argument --temperature: must be a finite number >= 0, got -1.0"),
    "top-k 0": (lambda w: ["sample", str(w / "run"), "--top-k", "0"], "--top-k: must be an integer in [1, "),
    "top-p 0": (lambda w: ["sample", str(w / "run"), "--top-p", "0"], "--top-p: must be a finite number in (0, 1]"),
    "top-p 1.5": (lambda w: ["sample", str(w / "run"), "--top-p", "1.5"],
                  "--top-p: must be a finite number in (0, 1], got 1.5"),
    "zero samples": (lambda w: ["sample", str(w / "run"), "--num-samples", "0"],
                     "--num-samples: must be an integer in [1, 10,000], got 0"),
    "negative workers": (lambda w: ["data", "prepare", "--source", "embedded:5", "--out", str(w / "p"),
                                    "--processes", "-1"], "--processes: must be an integer in [1, 1,024), got -1"),
    "train without a config": (lambda w: ["train"], "name a config"),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_and_nonzero(world, capsys, name):
    if name == "sample on a missing GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    argv, message = CASES[name]
    assert main(argv(world)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (world / "rep").exists()  # analyze wrote nothing
    for name_ in ("r1", "r2", "r3", "r4", "p"):
        assert not (world / name_).exists()  # nothing that would block the corrected command


def test_short_val_split_and_empty_val_split_are_stated(tmp_path, capsys):
    data = prepare_tiny(tmp_path / "d", stories=30)
    train(tiny_train_config(data, tmp_path / "run", **{"model.block_size": 512, "run.max_iters": 1}))
    assert "no validation loss will be computed" in capsys.readouterr().err
    assert main(["data", "prepare", "--source", "embedded:1", "--val-fraction", "0.01", "--out",
                 str(tmp_path / "one")]) == 0
    assert "leaves the val split empty" in capsys.readouterr().err


def test_resuming_a_finished_run_says_so(world, capsys):
    args = _train_args(world, world / "run", **{"run.max_iters": 4, "model.block_size": 16})
    assert main([*args, "--resume", "auto"]) == 0
    assert "already finished at step 4" in capsys.readouterr().out


def test_a_failed_start_does_not_stay_recorded(tmp_path):
    """A run that failed after creating its directory is rerun with a good config: config.toml is the truth."""
    from prism_lm.errors import PrismError
    from prism_lm.run_dir import RunDir

    data = prepare_tiny(tmp_path / "d", stories=30)
    with pytest.raises(PrismError, match="training loss became nan .*no verified checkpoint"):
        train(tiny_train_config(data, tmp_path / "run", **{"optim.lr": 1e30, "run.eval_interval": 100}))
    assert RunDir(tmp_path / "run").read_config().optim.lr == 1e30
    good = tiny_train_config(data, tmp_path / "run", **{"run.max_iters": 2})
    with pytest.raises(PrismError, match="optim.lr is 0.003 but the run was started with 1e"):
        train(good, resume="auto")  # another lr over the failed start's records: said, not done silently
    train(good, resume="auto", allow_config_change=True)  # nothing to resume from: step 0, the failed start kept
    run = RunDir(tmp_path / "run")
    assert run.read_config().optim.lr == 3e-3 and RunDir(run.path / "previous-1").read_config().optim.lr == 1e30
    assert [r["iter"] for r in read_metrics(run.metrics_path) if r["type"] == "iter"] == [1, 2]


def test_resume_refuses_an_exactness_breaking_change_unless_allowed(tmp_path, capsys):
    import json

    data = prepare_tiny(tmp_path / "d", stories=30)
    run = tmp_path / "run"
    train(tiny_train_config(data, run, **{"run.max_iters": 4}))
    args = _train_args(tmp_path, run, **{"run.max_iters": 8, "optim.lambda_anneal_iters": 0, "optim.lr": 1e-3})
    args = [a.replace(str(tmp_path / "d"), str(data)) for a in args]
    assert main([*args, "--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert "--resume: optim.lr is 0.001 but the run was started with 0.003" in err and "--allow-config-change" in err
    assert main([*args, "--resume", "auto", "--allow-config-change"]) == 0
    change = json.loads((run / "config_changes.jsonl").read_text().splitlines()[-1])
    assert change["step"] == 4 and change["changes"]["optim.lr"] == [0.003, 0.001]
    from prism_lm.run_dir import RunDir

    assert RunDir(run).read_config().optim.lr == 1e-3
