"""The conventions researchers expect from a CLI and a training run (issue 13, point 3)."""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from prism_lm.cli import build_parser, main
from prism_lm.train.loop import train
from tests.helpers import cli_env, run_cli, set_args, tiny_train_config


def test_redirected_training_prints_plain_log_lines_with_every_eval(data, tmp_path):
    proc = run_cli(["train", "tiny-prism-cpu", *set_args(data, tmp_path / "run", **{"run.log_interval": 3})])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    iters = [line for line in lines if line.startswith("iter ")]
    evals = [line for line in lines if line.startswith("eval ")]
    assert [line.split(" |")[0] for line in iters] == [f"iter {i}/12" for i in (3, 4, 6, 8, 9, 12)]
    assert all(k in iters[0] for k in ("| loss ", "| lr ", "| λ ", "| grad-norm ", " tok/s"))
    assert [line.split(" |")[0] for line in evals] == ["eval 0/12", "eval 6/12", "eval 12/12"]
    assert all("| val loss " in line for line in evals)
    assert "\r" not in proc.stdout and "\r" not in proc.stderr  # no progress bar in a file


def test_tensorboard_asked_for_and_missing_is_a_warning(data, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    train(tiny_train_config(data, tmp_path / "run", **{"run.tensorboard": "true", "run.max_iters": 2}))
    assert "run.tensorboard is true but TensorBoard is not installed" in capsys.readouterr().err


def test_tensorboard_writes_events_when_installed(data, tmp_path):
    pytest.importorskip("tensorboard")
    train(tiny_train_config(data, tmp_path / "run", **{"run.tensorboard": "true", "run.max_iters": 2}))
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


@pytest.mark.slow  # 2-5 s; its class keeps a default case beside it
def test_wandb_offline_and_resuming_the_same_wandb_run(data, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train(tiny_train_config(data, run, **{"run.wandb": "true", "run.max_iters": 4, "optim.lambda_anneal_iters": 12}))
    run_id = (run / "wandb-id").read_text()
    train(tiny_train_config(data, run, **{"run.wandb": "true", "run.max_iters": 8, "optim.lambda_anneal_iters": 12}),
          resume="auto")
    offline = sorted((run / "wandb").glob("offline-run-*"))
    # wandb names a folder offline-run-<time>-<id>, adding -1 when both sessions start in the same second
    assert len(offline) == 2 and all(re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", p.name)
                                     for p in offline), [p.name for p in offline]


def test_version_module_entry_point_and_helpful_options(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("prism-lm ")
    proc = subprocess.run([sys.executable, "-m", "prism_lm", "--help"], capture_output=True, text=True, env=cli_env())
    assert proc.returncode == 0 and "demo" in proc.stdout
    order = [a.dest for a in build_parser()._subparsers._group_actions[0]._choices_actions]
    assert order[:5] == ["demo", "data", "train", "eval", "sample"]

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    for parser in parsers(build_parser()):
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                assert action.help, f"{parser.prog} {action.dest} has no help"
        with_defaults = [a for a in parser._actions if a.option_strings and a.default not in (None, False, [])
                         and a.default is not argparse.SUPPRESS and a.help is not argparse.SUPPRESS]
        assert parser.format_help().count("(default:") >= len(with_defaults), parser.prog


def test_eval_defaults_to_the_block_size_and_device_auto(data, tmp_path, capsys):
    train(tiny_train_config(data, tmp_path / "run", **{"run.max_iters": 2}))
    capsys.readouterr()  # the training's own log lines
    assert main(["eval", str(tmp_path / "run"), "--data", str(data), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["context"] for r in results] == [32]


def test_gitignore_names_the_demo_folder():
    lines = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().splitlines()
    assert "demo-runs/" in lines and "demo-out/" not in lines
