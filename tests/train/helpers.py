"""A tiny prepared corpus and tiny training configs shared by the training tests."""

import os
import subprocess
import sys
from pathlib import Path

from prism_lm.config import load_train_config
from prism_lm.data.prepare import prepare


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


def tiny_config(data_dir, out_dir, **extra):
    return load_train_config(None, tiny_overrides(data_dir, out_dir, **extra))


def cli_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return env


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prism_lm.cli", *args], capture_output=True, text=True,
                          env=cli_env(), **kwargs)


def trained_tiny_run(base, steps: int = 8):
    """``base``/d (60 embedded stories) and ``base``/run (a tiny PRISM trained ``steps`` steps, block 64)."""
    from prism_lm.train.loop import train

    data = prepare_tiny(base / "d", stories=60)
    train(tiny_config(data, base / "run", **{"run.max_iters": steps, "run.eval_interval": steps // 2,
                                             "model.block_size": 64}))
    return base


def bad_input_world(base: Path) -> Path:
    """``base``/d (60 stories), ``base``/run (a 4-step tiny PRISM, block 16) and ``base``/a-file (a file
    where a folder is expected): what the bad-input tables run their commands against."""
    from prism_lm.train.loop import train

    data = prepare_tiny(base / "d", stories=60)
    train(tiny_config(data, base / "run", **{"run.max_iters": 4, "model.block_size": 16}))
    (base / "a-file").write_text("not a directory")
    return base
