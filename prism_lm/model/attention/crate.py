"""CRATE's masked MSSA (``crate``): GPT's layout with one projection as Q, K and V."""

from __future__ import annotations

import torch
from torch import nn

from prism_lm.model.attention.common import attend
from prism_lm.model.attention.gpt import GPTAttention
from prism_lm.model.config import ModelConfig


class CrateAttention(GPTAttention):
    """CRATE's masked MSSA (Yu et al.; ``model/crate_gpt.py`` of Ma-Lab-Berkeley/CRATE): GPT's layout
    with one projection (C -> C, no bias) used as Q, K and V per head, causal softmax at 1/sqrt(C/H),
    an untied output projection with bias (always, as CRATE has it), no RoPE and no second stream."""

    name = "crate"

    @classmethod
    def matmuls(cls, cfg: ModelConfig) -> list[tuple[int, int]]:
        return [(cfg.n_embd, cfg.n_embd)] * 2  # U z, output projection

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__(cfg, layer_idx)
        self.c_attn = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)  # U: Q = K = V
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=True)
        self.c_proj.is_residual_projection = True

    def forward(self, x, positions: torch.Tensor | None = None, cache=None, eager: bool = False,
                need_weights: bool = False):
        B, T, C = x.shape
        u = self.c_attn(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd): Q = K = V
        q, k, v = self.at_site(self.hook_q, u), self.at_site(self.hook_k, u), self.at_site(self.hook_v, u)
        k, v, mask = cache.update(k, v, positions) if cache is not None else (k, v, None)
        y, probs = attend(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                          eager=eager, need_weights=need_weights, mask=mask, hooks=self)
        y = self.at_site(self.hook_z, self.edited(y)).transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y)), probs
