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


WHITE_BOX = {  # "attention+mlp": the white-box family's models, run through the per-kind tests too
    "prism+ista": dict(attention="prism", mlp="ista", ista_mode="residual"),  # a fully white-box PRISM
    "crate+ista": dict(attention="crate", mlp="ista", bias=True, final_norm=False),  # CRATE's LM
}


def tiny_config(attention: str = "prism", **overrides) -> ModelConfig:
    """A model small enough for per-test use on CPU (a few ms a forward); ``attention`` is a kind or
    one of ``WHITE_BOX``'s names."""
    base = dict(attention=attention, n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=97, dropout=0.0)
    base.update(WHITE_BOX.get(attention, {}))
    if attention == "diff":
        base["n_head"] = 2  # 2 differential heads of width 8 per map
    base.update(overrides)
    return ModelConfig(**base)


ALL_KINDS = (*ATTENTION_KINDS, *WHITE_BOX)  # every registered kind runs through every per-kind test
