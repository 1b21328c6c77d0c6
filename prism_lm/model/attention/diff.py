"""The Differential Transformer's attention (``diff``, Ye et al. 2024)."""

from __future__ import annotations

import math

import torch
from torch import nn

from prism_lm.errors import PrismError
from prism_lm.model.attention.common import AttentionKind, LearnedLambda, attend
from prism_lm.model.config import ModelConfig
from prism_lm.model.dropout import Dropout
from prism_lm.model.rope import Rotary


class DiffAttention(AttentionKind):
    """Differential Transformer attention (Ye et al. 2024).

    H differential heads, each with two softmax maps of width d = C/(2H) over a shared value of
    width 2d: (A1 - λ A2) V, per-head RMSNorm, times (1 - λ_init), output projection. λ is learned
    with λ_init(l) = 0.8 - 0.6 exp(-0.3 l). RoPE (base 10000) on Q/K as in that paper. Map 2i and
    2i+1 of the stacked heads belong to differential head i. No dropout on the attention maps, as in
    the reference code (microsoft/unilm Diff-Transformer, multihead_diffattn.py); the residual
    dropout after the output projection is the model's, as for every kind.
    """

    name = "diff"

    @classmethod
    def streams(cls, cfg: ModelConfig) -> tuple[str, ...]:
        return ("positive", "negative")

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        if (cfg.n_embd // cfg.n_head) % 4:
            raise PrismError("DIFF needs n_embd/n_head divisible by 4 (two maps, even RoPE pairs)")

    @classmethod
    def uses_rope(cls, cfg: ModelConfig) -> bool:
        return True

    @classmethod
    def matmuls(cls, cfg: ModelConfig) -> list[tuple[int, int]]:
        return [(cfg.n_embd, cfg.n_embd)] * 4  # q, k, v, out

    @classmethod
    def map_widths(cls, cfg: ModelConfig) -> tuple[int, int]:
        return cfg.n_embd, 2 * cfg.n_embd  # 2H maps of width C/2H; each map reads a value of width C/H

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.stream_names = self.streams(cfg)
        C, H = cfg.n_embd, cfg.n_head
        self.n_head, self.head_dim = H, C // H // 2  # per-map Q/K width d
        self.q_proj = nn.Linear(C, C, bias=cfg.bias)
        self.k_proj = nn.Linear(C, C, bias=cfg.bias)
        self.v_proj = nn.Linear(C, C, bias=cfg.bias)
        self.out_proj = nn.Linear(C, C, bias=cfg.bias)
        self.out_proj.is_residual_projection = True
        self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * layer_idx)
        self.learned_lambda = LearnedLambda(self.head_dim, self.lambda_init)
        self.register_buffer("subln_scale", torch.tensor(1.0 - self.lambda_init), persistent=False)
        self.subln = nn.RMSNorm(2 * self.head_dim, eps=1e-5)
        self.rotary = Rotary(self.head_dim, [cfg.rope_base], cfg.block_size)
        self.resid_dropout = Dropout(cfg.dropout)
        self.add_hook_sites()

    def reset_buffers(self) -> None:
        """Recompute the non-persistent buffer (loaders that build on the meta device leave it empty)."""
        self.subln_scale.fill_(1.0 - self.lambda_init)

    def reset_parameters(self) -> None:
        self.learned_lambda.reset_parameters()
        self.subln.reset_parameters()

    def own_lambda(self) -> torch.Tensor:
        return self.learned_lambda()

    def map_index(self, stream: int, head: int) -> int:
        return 2 * head + stream  # maps 2i (positive) and 2i + 1 (negative) belong to head i

    def forward(self, x, positions: torch.Tensor | None = None, cache=None, eager: bool = False,
                need_weights: bool = False, key_mask: torch.Tensor | None = None):
        B, T, C = x.shape
        H, d = self.n_head, self.head_dim
        q = self.rotary(self.q_proj(x).view(B, T, 2 * H, d).transpose(1, 2), positions)  # (B, 2H, T, d)
        k = self.rotary(self.k_proj(x).view(B, T, 2 * H, d).transpose(1, 2), positions)  # (B, 2H, T, d)
        v = self.v_proj(x).view(B, T, H, 2 * d).transpose(1, 2)  # (B, H, T, 2d)
        q, k, v = self.at_site(self.hook_q, q), self.at_site(self.hook_k, k), self.at_site(self.hook_v, v)
        k, v, mask = self.cached(k, v, positions, cache, key_mask, q.size(-2))
        y, probs = attend(q, k, v.repeat_interleave(2, dim=1), dropout_p=0.0,
                          eager=eager, need_weights=need_weights, mask=mask, hooks=self)  # (B, 2H, T, 2d)
        y = self.at_site(self.hook_z, self.edited(y))
        if probs is not None:  # regroup to stream-major: positive maps of all heads, then negative
            probs = probs.view(B, H, 2, *probs.shape[-2:]).transpose(1, 2).reshape_as(probs)
        if self.results_watched():
            return self.resid_dropout(self.summed_results(self.normalised_maps(y), self.map_output_weights(),
                                                          self.out_proj.bias)), probs
        y = y.view(B, H, 2, T, 2 * d)
        y = y[:, :, 0] - self.current_lambda().to(y.dtype) * y[:, :, 1]  # (B, H, T, 2d)
        y = self.subln(y) * self.subln_scale.to(y.dtype)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.out_proj(y)), probs

    def normalised_maps(self, y: torch.Tensor) -> torch.Tensor:
        """Per-map outputs y (B, 2H, T, 2d) -> each map's share of its head's normalised output: the
        positive map's y and the negative map's −λ·y, both through the head's RMSNorm scale (the same
        for both: it is computed from their difference), its gain and 1 − λ_init. The two shares sum
        to the head's output, so the maps' results sum to the attention output."""
        B, _, T, width = y.shape
        pair = y.view(B, self.n_head, 2, T, width)
        signed = torch.stack([pair[:, :, 0], -self.current_lambda().to(y.dtype) * pair[:, :, 1]], dim=2)
        head = signed.sum(2)  # (B, H, T, 2d): what the RMSNorm normalises
        scale = torch.rsqrt(head.pow(2).mean(-1, keepdim=True) + self.subln.eps).unsqueeze(2)
        gain = (self.subln.weight * self.subln_scale).to(y.dtype)
        return (signed * scale * gain).view(B, 2 * self.n_head, T, width)

    def map_output_weights(self) -> torch.Tensor:
        """The output projection of each map's head (2H, 2d, C): maps 2i and 2i + 1 share head i's."""
        return self.out_proj.weight.t().view(self.n_head, 2 * self.head_dim, -1).repeat_interleave(2, dim=0)

    def head_weights(self) -> dict[str, torch.Tensor]:
        """Per map (2H): W_Q, W_K its own (C, d); W_V its head's shared value (C, 2d); W_O its head's
        output projection times the RMSNorm gain, 1 − λ_init and the map's sign (+1, −λ). The RMSNorm's
        division depends on the input, so z @ W_O omits it; hook_result carries it."""
        H, d = self.n_head, self.head_dim

        def per_map(w, maps, width):  # (C_out, C_in) -> (maps, C_in, width)
            return w.view(maps, width, -1).transpose(1, 2)

        sign = torch.ones(2 * H, device=self.out_proj.weight.device, dtype=self.out_proj.weight.dtype)
        sign[1::2] = -self.current_lambda().detach()
        gain = (self.subln.weight * self.subln_scale).detach()
        w_o = self.map_output_weights() * gain.view(1, -1, 1) * sign.view(-1, 1, 1)
        bias = self.out_proj.bias if self.out_proj.bias is not None else w_o.new_zeros(w_o.size(-1))
        return {"W_Q": per_map(self.q_proj.weight, 2 * H, d), "W_K": per_map(self.k_proj.weight, 2 * H, d),
                "W_V": per_map(self.v_proj.weight, H, 2 * d).repeat_interleave(2, dim=0), "W_O": w_o, "b_O": bias}
