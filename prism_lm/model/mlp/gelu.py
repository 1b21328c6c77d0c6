"""GPT-2's MLP (``gelu``)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from prism_lm.model.config import ModelConfig
from prism_lm.model.dropout import Dropout
from prism_lm.model.mlp.common import MLPKind


class GeluMLP(MLPKind):
    """GPT-2's MLP: C -> 4C, GELU, 4C -> C, dropout; the output projection is a residual projection."""

    name = "gelu"

    @classmethod
    def matmuls(cls, cfg: ModelConfig) -> list[tuple[int, int]]:
        return [(cfg.n_embd, 4 * cfg.n_embd), (4 * cfg.n_embd, cfg.n_embd)]

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.c_proj.is_residual_projection = True
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))
