"""The one helpers module of the tests: tiny model and training configs, the tiny prepared corpus, the
CLI in a subprocess, the two-arm experiment file, and the comparisons of metrics records.

The expensive things built from these (a prepared corpus, a trained tiny run, the bad-input world)
are session-scoped fixtures in ``tests/conftest.py``: built once per test session, read-only for
the tests that take them (a test that changes one copies it first)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from prism_lm.config import ModelConfig, TrainConfig, load_train_config
from prism_lm.data.prepare import prepare
from prism_lm.model import ATTENTION_KINDS
from prism_lm.run_dir import read_metrics

ROOT = Path(__file__).resolve().parents[1]

WHITE_BOX = {  # "attention+mlp": the white-box family's models, run through the per-kind tests too
    "prism+ista": dict(attention="prism", mlp="ista", ista=dict(mode="residual")),  # a fully white-box PRISM
    "crate+ista": dict(attention="crate", mlp="ista", bias=True, final_norm=False),  # CRATE's LM
}
ALL_KINDS = (*ATTENTION_KINDS, *WHITE_BOX)  # every registered kind runs through every per-kind test


def tiny_model_config(attention: str = "prism", **overrides) -> ModelConfig:
    """A model small enough for per-test use on CPU (a few ms a forward); ``attention`` is a kind or
    one of ``WHITE_BOX``'s names; a section's knobs as a dict (``prism=dict(freq_multiplier=1.0)``)."""
    base = dict(attention=attention, n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=97, dropout=0.0)
    base.update(WHITE_BOX.get(attention, {}))
    base.update(overrides)
    return ModelConfig.from_json(base)


# ---- a tiny corpus and tiny training runs


def prepare_tiny(directory: Path, stories: int = 150) -> Path:
    prepare([f"embedded:{stories}"], directory, val_fraction=0.1, compact_vocab=True, progress=False)
    return directory


def tiny_overrides(data_dir, out_dir, **extra) -> list[str]:
    values = {
        "data.dir": f'"{data_dir}"', "run.out_dir": f'"{out_dir}"',
        "model.vocab_size": 0, "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32, "model.block_size": 32,
        "model.dropout": 0.1, "run.batch_size": 4, "run.grad_accum": 2, "run.max_iters": 12,
        "run.eval_interval": 6, "run.eval_iters": 2, "run.log_interval": 1, "run.checkpoint_interval": 4,
        "run.keep_checkpoints": 2, "run.tensorboard": "false", "run.progress": "false",
        "optim.warmup_iters": 2, "optim.lr_decay_iters": 12, "optim.lr": 3e-3, "optim.min_lr": 3e-4,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def tiny_train_config(data_dir, out_dir, **extra) -> TrainConfig:
    return load_train_config(None, tiny_overrides(data_dir, out_dir, **extra))


def set_args(data_dir, out_dir, **extra) -> list[str]:
    """``tiny_overrides`` as command-line arguments: --set K=V ..."""
    return [a for s in tiny_overrides(data_dir, out_dir, **extra) for a in ("--set", s)]


def train_argv(config: str, data_dir, out_dir, **extra) -> list[str]:
    """``prism train CONFIG`` on the tiny corpus with ``tiny_overrides``."""
    return ["train", config, *set_args(data_dir, out_dir, **extra)]


def trained_tiny_run(base: Path, steps: int = 8, block_size: int = 64, eval_interval: int | None = None) -> Path:
    """``base``/d (60 embedded stories) and ``base``/run (a tiny PRISM trained ``steps`` steps,
    evaluated every ``eval_interval`` steps, by default half the run)."""
    from prism_lm.train.loop import train

    data = prepare_tiny(base / "d", stories=60)
    train(tiny_train_config(data, base / "run", **{"run.max_iters": steps, "model.block_size": block_size,
                                                   "run.eval_interval": eval_interval or steps // 2}))
    return base


TIMING = ("tokens_per_s", "mfu")  # what differs between two runs that compute the same numbers


def records_without_timing(run: Path) -> list[dict]:
    """A run's metrics records, less the timing fields: equal for two runs that compute the same."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run / "metrics.jsonl")]


# ---- the CLI in a subprocess


def cli_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prism_lm.cli", *args], capture_output=True, text=True,
                          env=cli_env(), **kwargs)


def start_cli(args: list[str]) -> subprocess.Popen:
    """``prism ARGS`` started in the background (to be signalled or killed by the test)."""
    return subprocess.Popen([sys.executable, "-m", "prism_lm.cli", *args], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 90, poll: float = 0.002) -> bool:
    """Poll ``predicate`` until it holds (True), or ``proc`` ends or ``timeout`` passes (False)."""
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None or time.time() > deadline:
            return False
        time.sleep(poll)
    return True


# ---- a two-arm, two-seed, few-step experiment file shared by the sweep tests

TWO_ARMS = """
description = "two arms, two seeds, a few steps"
base = "tiny-prism-cpu"
seeds = [0, 1]
data = "embedded:150"
[set.model]
n_layer = 2
n_head = 2
n_embd = 32
block_size = 32
[set.run]
max_iters = {steps}
eval_interval = 4
checkpoint_interval = 4
log_interval = 1
eval_iters = 2
batch_size = 4
[set.optim]
warmup_iters = 2
lr_decay_iters = {steps}
[arms.prism]
[arms.gpt]
base = "tiny-gpt-cpu"
model = {{ n_layer = 2, n_head = 2, n_embd = 32, block_size = 32 }}
[evaluate]
contexts = [16, 32]
head_windows = 4
[[verdicts]]
claim = "PRISM beats GPT"
metric = "val_loss_32"
arm = "prism"
baseline = "gpt"
better = "lower"
"""


def write_experiment(directory: Path, steps: int = 8, name: str = "two.toml", extra: str = "") -> Path:
    path = directory / name
    path.write_text(TWO_ARMS.format(steps=steps) + extra, encoding="utf-8")
    return path


def bad_input_world(base: Path) -> Path:
    """``base``/d (60 stories), ``base``/run (a 4-step tiny PRISM, block 16) and ``base``/a-file (a file
    where a folder is expected): what the bad-input tables run their commands against."""
    trained_tiny_run(base, steps=4, block_size=16, eval_interval=6)
    (base / "a-file").write_text("not a directory")
    return base
