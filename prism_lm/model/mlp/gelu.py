"""GPT-2's MLP (``gelu``)."""

from __future__ import annotations

import torch
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
        self.hook_pre, self.hook_post = nn.Identity(), nn.Identity()  # TransformerLens's names (B, T, 4C)

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        return self.dropout(self.c_proj(self.hook_post(F.gelu(self.hook_pre(self.c_fc(x))))))

    def neuron_weights(self) -> dict[str, torch.Tensor]:
        """TransformerLens's layout: W_in (C, 4C), b_in (4C,), W_out (4C, C), b_out (C,) (zeros without bias)."""
        w_in, w_out = self.c_fc.weight.t(), self.c_proj.weight.t()
        return {"W_in": w_in, "b_in": self.c_fc.bias if self.c_fc.bias is not None else w_in.new_zeros(w_in.size(1)),
                "W_out": w_out,
                "b_out": self.c_proj.bias if self.c_proj.bias is not None else w_out.new_zeros(w_out.size(1))}

    # TransformerLens reads these from a block's MLP (ActivationCache.get_neuron_results)
    W_in = property(lambda self: self.neuron_weights()["W_in"])
    b_in = property(lambda self: self.neuron_weights()["b_in"])
    W_out = property(lambda self: self.neuron_weights()["W_out"])
    b_out = property(lambda self: self.neuron_weights()["b_out"])
