"""A two-arm, two-seed, few-step experiment file shared by the sweep tests."""

from pathlib import Path

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
