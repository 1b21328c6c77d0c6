import os

import pytest
import torch

# tests never touch the network: the hub libraries fail fast instead of downloading
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from prism_lm.config import ModelConfig
from prism_lm.model import ATTENTION_KINDS


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_config(attention: str = "prism", **overrides) -> ModelConfig:
    """A model small enough for per-test use on CPU (a few ms a forward)."""
    base = dict(attention=attention, n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=97, dropout=0.0)
    if attention == "diff":
        base["n_head"] = 2  # 2 differential heads of width 8 per map
    base.update(overrides)
    return ModelConfig(**base)


ALL_KINDS = tuple(ATTENTION_KINDS)  # every registered kind runs through every per-kind test
