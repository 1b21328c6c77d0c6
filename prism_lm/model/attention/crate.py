"""CRATE's masked MSSA (``crate``): GPT's layout with one projection as Q, K and V."""

from __future__ import annotations

import torch
from torch import nn

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

    def project(self, x: torch.Tensor, positions: torch.Tensor | None):
        """x (B, T, C) -> U z (B, H, T, hd) three times: Q = K = V, no RoPE (GPT's forward does the rest)."""
        B, T, _ = x.shape
        u = self.c_attn(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        return u, u, u

    def qkv_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """U three times: W_Q = W_K = W_V."""
        return self.c_attn.weight, self.c_attn.weight, self.c_attn.weight
