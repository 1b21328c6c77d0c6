"""nanoGPT's attention (``gpt``) and the same with RoPE on Q and K (``gpt-rope``): the baselines."""

from __future__ import annotations

import torch
from torch import nn

from prism_lm.errors import PrismError
from prism_lm.model.attention.common import AttentionKind, attend
from prism_lm.model.config import ModelConfig
from prism_lm.model.dropout import Dropout
from prism_lm.model.rope import Rotary


class GPTAttention(AttentionKind):
    """nanoGPT's attention: fused Q/K/V projection, output projection, no RoPE."""

    name = "gpt"

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.stream_names = self.streams(cfg)
        self.n_head, self.head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.c_proj.is_residual_projection = True
        self.output_scale = cfg.gpt.output_scale  # 1: nanoGPT's
        self.dropout = cfg.dropout
        self.resid_dropout = Dropout(cfg.dropout)
        self.add_hook_sites()

    def project(self, x: torch.Tensor, positions: torch.Tensor | None):
        """x (B, T, C) -> q, k, v (B, H, T, hd) as attention reads them (RoPE on q and k where the kind has it)."""
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        return self.rotate(q, positions), self.rotate(k, positions), v

    def forward(self, x, positions: torch.Tensor | None = None, cache=None, eager: bool = False,
                need_weights: bool = False, key_mask: torch.Tensor | None = None):
        B, T, C = x.shape
        q, k, v = self.project(x, positions)  # (B, H, T, hd)
        q, k, v = self.at_site(self.hook_q, q), self.at_site(self.hook_k, k), self.at_site(self.hook_v, v)
        k, v, mask = self.cached(k, v, positions, cache, key_mask, q.size(-2))
        y, probs = attend(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                          eager=eager, need_weights=need_weights, mask=mask, hooks=self)
        y = self.at_site(self.hook_z, self.edited(y))  # (B, H, T, hd)
        if self.results_watched():
            return self.resid_dropout(self.summed_results(y, *self.output_weights())), probs
        out = self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return self.resid_dropout(out if self.output_scale == 1.0 else out * self.output_scale), probs

    def qkv_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The Q, K and V projections as (C_out, C_in) weights."""
        return self.c_attn.weight.chunk(3, dim=0)

    def output_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each head's output weight (H, hd, C) and the output bias (C,) (zeros without one), both
        with the output scale."""
        bias = self.c_proj.bias
        bias = bias if bias is not None else self.c_proj.weight.new_zeros(self.c_proj.out_features)
        return self.c_proj.weight.t().view(self.n_head, self.head_dim, -1) * self.output_scale, bias * self.output_scale

    def head_weights(self) -> dict[str, torch.Tensor]:
        H, hd = self.n_head, self.head_dim

        def per_head(w):  # (C_out, C_in) -> (H, C_in, hd)
            return w.view(H, hd, -1).transpose(1, 2)

        w_q, w_k, w_v = self.qkv_weights()
        w_o, b_o = self.output_weights()
        return {"W_Q": per_head(w_q), "W_K": per_head(w_k), "W_V": per_head(w_v), "W_O": w_o, "b_O": b_o}

    def rotate(self, x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        return x  # no position information here: GPT-2 has its learned absolute embedding only


class GPTRoPEAttention(GPTAttention):
    """GPT-2 attention with RoPE (base ``rope_base``) on Q and K: the baseline that, like PRISM,
    has rotary positions on top of the learned absolute embedding."""

    name = "gpt-rope"

    @classmethod
    def uses_rope(cls, cfg: ModelConfig) -> bool:
        return True

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        if (cfg.n_embd // cfg.n_head) % 2:
            raise PrismError(f"gpt-rope needs an even head dim (n_embd/n_head = {cfg.n_embd // cfg.n_head})")

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__(cfg, layer_idx)
        self.rotary = Rotary(self.head_dim, [cfg.rope_base], cfg.block_size)

    def rotate(self, x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        return self.rotary(x, positions)
