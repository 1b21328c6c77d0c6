"""PRISM's attention (the paper's eq. 7), its knobs in ``[model.prism]`` (``model.config.PrismConfig``).

One dictionary U (C -> S*H*D, no bias, D = (C/H)·R); Q = K = V = U z per head with RoPE on Q/K
only; signal heads use base rope_base·m, noise heads base rope_base/m ("base" scaling; "frequency"
scaling multiplies and divides the frequencies by m instead); output (y_s U_s - λ y_n U_n) / sqrt(2 H R)
with W_O = Uᵀ (or an untied copy, ``tied_output = false``). λ is a buffer the training loop writes
(``set_scheduled_lambda``), or learned (``lambda_schedule = "learned"``). "Noise stream off" drops
the noise heads and keeps the same scale, so it equals the full model at λ = 0 with the same U_s.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from prism_lm.errors import PrismError
from prism_lm.model.attention.common import AttentionKind, LearnedLambda, attend
from prism_lm.model.config import ModelConfig
from prism_lm.model.dropout import Dropout
from prism_lm.model.rope import Rotary


class PrismAttention(AttentionKind):
    name = "prism"

    @classmethod
    def streams(cls, cfg: ModelConfig) -> tuple[str, ...]:
        return ("signal", "noise") if cfg.prism.noise_stream else ("signal",)

    @classmethod
    def head_width(cls, cfg: ModelConfig) -> int:
        """Each head's dictionary width D = (C/H)·R."""
        return cfg.n_embd // cfg.n_head * cfg.prism.expansion_ratio

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        if cls.head_width(cfg) % 2:
            raise PrismError(f"PRISM head dim (n_embd/n_head*expansion_ratio = {cls.head_width(cfg)}) must be even "
                             "for RoPE")

    @classmethod
    def uses_rope(cls, cfg: ModelConfig) -> bool:
        return True

    @classmethod
    def matmuls(cls, cfg: ModelConfig) -> list[tuple[int, int]]:
        width = len(cls.streams(cfg)) * cfg.n_head * cls.head_width(cfg)
        return [(cfg.n_embd, width), (width, cfg.n_embd)]  # U z, then y U (W_O = U^T, or its untied copy)

    @classmethod
    def map_widths(cls, cfg: ModelConfig) -> tuple[int, int]:
        width = len(cls.streams(cfg)) * cfg.n_head * cls.head_width(cfg)
        return width, width

    @classmethod
    def dictionary_shape(cls, cfg: ModelConfig) -> tuple[int, int, int, int]:
        """U's rows as (streams, heads, D, C): stream 0 (signal) first, then head by head."""
        return len(cls.streams(cfg)), cfg.n_head, cls.head_width(cfg), cfg.n_embd

    @classmethod
    def rope_bases(cls, cfg: ModelConfig) -> list[float]:
        """RoPE base of each stream: signal rope_base·m and noise rope_base/m ("base" scaling), or
        rope_base for both ("frequency" scaling, where m scales the frequencies: ``rope_scales``)."""
        m = cfg.prism.multiplier if cfg.prism.rope_scaling == "base" else 1.0
        return [cfg.rope_base * m, cfg.rope_base / m][: len(cls.streams(cfg))]

    @classmethod
    def rope_scales(cls, cfg: ModelConfig) -> list[float]:
        """Each stream's frequency factor: m and 1/m with "frequency" scaling, else 1."""
        m = cfg.prism.multiplier if cfg.prism.rope_scaling == "frequency" else 1.0
        return [m, 1.0 / m][: len(cls.streams(cfg))]

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.stream_names = self.streams(cfg)
        self.n_streams, self.n_head, self.head_dim = self.dictionary_shape(cfg)[:3]
        width = self.n_streams * self.n_head * self.head_dim
        self.u_proj = nn.Linear(cfg.n_embd, width, bias=False)  # the dictionary U, rows = atoms
        self.out_proj = None if cfg.prism.tied_output else nn.Linear(width, cfg.n_embd, bias=False)
        self.output_scale = 1.0 / math.sqrt(2 * cfg.n_head * cfg.prism.expansion_ratio)
        self.rotary = Rotary(self.head_dim, self.rope_bases(cfg), cfg.block_size, self.rope_scales(cfg))
        self.learned_lambda = None
        if cfg.prism.learns_lambda:
            self.learned_lambda = LearnedLambda(self.head_dim, cfg.prism.lambda_start)
        else:  # set from the step by the training loop; a buffer so checkpoints keep it
            self.register_buffer("lambda_", torch.tensor(float(cfg.prism.lambda_start)))
        self.dropout = cfg.dropout
        self.resid_dropout = Dropout(cfg.dropout)
        self.add_hook_sites()

    def dictionary(self) -> torch.Tensor:
        """U (streams, heads, D, C), a view of the live weight."""
        return self.u_proj.weight.view(self.n_streams, self.n_head, self.head_dim, -1)

    def set_scheduled_lambda(self, value: float) -> None:
        if self.learned_lambda is None:
            self.lambda_.fill_(value)

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.u_proj.weight)
        if self.out_proj is not None:  # start from the tied model's function, then learn freely
            with torch.no_grad():
                self.out_proj.weight.copy_(self.u_proj.weight.t())
        if self.learned_lambda is not None:
            self.learned_lambda.reset_parameters()

    def own_lambda(self) -> torch.Tensor:
        return self.learned_lambda() if self.learned_lambda is not None else self.lambda_

    def forward(self, x, positions: torch.Tensor | None = None, cache=None, eager: bool = False,
                need_weights: bool = False, key_mask: torch.Tensor | None = None):
        B, T, C = x.shape
        S, H, D = self.n_streams, self.n_head, self.head_dim
        u = self.u_proj(x).view(B, T, S * H, D).transpose(1, 2)  # (B, S*H, T, D): Q = K = V = U z
        qk = self.rotary(u, positions)  # RoPE on Q/K only; V stays unrotated
        if isinstance(self.hook_q, nn.Identity) and isinstance(self.hook_k, nn.Identity):
            q = k = qk  # one tensor: attention may use Q = K (cpu_training_attention)
        else:
            q, k = self.at_site(self.hook_q, qk), self.at_site(self.hook_k, qk)
        v = self.at_site(self.hook_v, u)
        k, v, mask = self.cached(k, v, positions, cache, key_mask, q.size(-2))
        y, probs = attend(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                          eager=eager, need_weights=need_weights, mask=mask, hooks=self)  # (B, S*H, T, D)
        y = self.at_site(self.hook_z, self.edited(y))
        if S == 2:  # signal heads +1, noise heads -λ
            lam = self.current_lambda().to(y.dtype).reshape(1)
            sign = torch.cat([y.new_ones(H), -lam.expand(H)]).view(1, S * H, 1, 1)
            y = y * sign
        if self.results_watched():
            return self.resid_dropout(self.summed_results(y, self.output_weights(), None)), probs
        y = y.transpose(1, 2).reshape(B, T, S * H * D)
        out = (y @ self.output_matrix().to(y.dtype)) * self.output_scale
        return self.resid_dropout(out), probs

    def output_matrix(self) -> torch.Tensor:
        """The output projection (S*H*D, C): U for the tied output (W_O = Uᵀ), the untied copy otherwise."""
        return self.u_proj.weight if self.out_proj is None else self.out_proj.weight.t()

    def output_weights(self) -> torch.Tensor:
        """Each map's output weight (S*H, D, C) with the 1/sqrt(2HR) scale, before the stream's sign."""
        return self.output_matrix().view(self.n_streams * self.n_head, self.head_dim, -1) * self.output_scale

    def head_weights(self) -> dict[str, torch.Tensor]:
        """W_Q = W_K = W_V = U_h per map (RoPE acts on Q and K after them), W_O = U_hᵀ per map times
        the output scale and the stream's sign: +1 for signal heads, −λ (current) for noise heads."""
        S, H = self.n_streams, self.n_head
        u = self.u_proj.weight.view(S * H, self.head_dim, -1).transpose(1, 2)  # (S*H, C, D)
        sign = torch.ones(S * H, device=u.device, dtype=u.dtype)
        if S == 2:
            sign[H:] = -self.current_lambda().detach().to(u.dtype)
        w_o = self.output_weights() * sign.view(-1, 1, 1)
        return {"W_Q": u, "W_K": u, "W_V": u, "W_O": w_o, "b_O": u.new_zeros(u.size(1))}
