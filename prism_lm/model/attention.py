"""The attention kinds behind one interface: PRISM, GPT-2, GPT-2 with RoPE, Differential Transformer, CRATE.

Every kind is an ``AttentionKind``: it maps (B, T, C) at ``positions`` (T,) (default 0..T-1) ->
(B, T, C), takes an optional KV cache (decoding, ``generate.py``) and ``need_weights`` (analysis),
and declares what the rest of prism-lm asks of it: its config checks, stream names, FLOP widths,
current λ, init, and for PRISM the dictionary's layout and RoPE bases. ``ATTENTION_KINDS`` at the
end of this file is the registry that config, CLI, metrics, bench, analysis and import read;
adding a kind is a class here plus its tests. Shared design choices:
- ``attend`` is the only place that computes softmax attention. Its fast path is one call of
  ``F.scaled_dot_product_attention`` over all heads of all streams (flash kernels on GPU), except
  for training with dropout on the CPU, where ``cpu_training_attention`` is faster (its docstring
  says why); its eager path writes the softmax out and can return the probabilities. All are
  tested equal, dropout masks included.
- Each kind names its streams (``stream_names``) and stacks their heads along the head axis,
  stream 0 first, so probabilities come back as (B, S*H, Tq, Tk) plus a stream label per head.

PRISM (the paper's eq. 7): one dictionary U (C -> S*H*D, no bias); Q = K = V = U z per head with
RoPE on Q/K only; signal heads use base 10000*m, noise heads base 10000/m; output
(y_s U_s - λ y_n U_n) / sqrt(2 H R). "Noise stream off" drops the noise heads and keeps the
same scale, so it equals the full model at λ = 0 with the same U_s.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from prism_lm.errors import PrismError
from prism_lm.model.dropout import Dropout, dropout, keep_mask
from prism_lm.model.rope import Rotary

if TYPE_CHECKING:
    from prism_lm.model.config import ModelConfig


def causal_mask(tq: int, tk: int, device: torch.device) -> torch.Tensor:
    """(Tq, Tk) bool, True where query i (the last Tq of Tk positions) may see key j."""
    offset = tk - tq
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(diagonal=offset)


def attend(q, k, v, *, dropout_p: float, eager: bool, need_weights: bool, mask: torch.Tensor | None = None,
           hooks: AttentionKind | None = None):
    """Causal softmax attention, scale 1/sqrt(Dk).

    q (B, H, Tq, Dk), k (B, H, Tk, Dk), v (B, H, Tk, Dv); without ``mask`` (Tq, Tk) bool, the
    queries are the last Tq positions and each sees the keys up to its own.
    Returns y (B, H, Tq, Dv) and, when ``need_weights``, the probabilities (B, H, Tq, Tk) in fp32
    before dropout. The eager path passes the masked scores and the probabilities through ``hooks``'
    ``hook_attn_scores`` and ``hook_pattern`` sites (TransformerLens's names), which may replace them.
    """
    tq, tk = q.size(-2), k.size(-2)
    if not (eager or need_weights):
        if dropout_p > 0 and mask is None and tq == tk and q.device.type == "cpu" \
                and not torch.compiler.is_compiling():
            return cpu_training_attention(q, k, v, dropout_p), None
        if mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        elif tq == tk:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        elif tq == 1:  # one new token sees the whole cache
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        else:
            mask = causal_mask(tq, tk, q.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return y, None
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, H, Tq, Tk)
    allowed = causal_mask(tq, tk, q.device) if mask is None else mask
    scores = scores.masked_fill(~allowed, float("-inf"))
    if hooks is not None:
        scores = hooks.hook_attn_scores(scores)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32)
    if hooks is not None:
        probs = hooks.hook_pattern(probs)
    dropped = dropout(probs, dropout_p)
    y = dropped.to(v.dtype) @ v
    return y, (probs if need_weights else None)


_ADDITIVE_MASKS: dict[tuple[int, torch.dtype], torch.Tensor] = {}


def additive_causal_mask(t: int, dtype: torch.dtype) -> torch.Tensor:
    """(T, T) CPU tensor, 0 where query i may see key j (j <= i) and -inf above the diagonal; cached."""
    key = (t, dtype)
    if key not in _ADDITIVE_MASKS:
        allowed = causal_mask(t, t, torch.device("cpu"))
        _ADDITIVE_MASKS[key] = torch.zeros(t, t, dtype=dtype).masked_fill_(~allowed, float("-inf"))
    return _ADDITIVE_MASKS[key]


class _SharedKeyScores(torch.autograd.Function):
    """scale·q qᵀ + mask for keys that are the queries (PRISM's Q = K). Its backward is one product,
    scale·(g + gᵀ) q, where autograd through q @ q.transpose would take two (g q and gᵀ q) and a sum."""

    @staticmethod
    def forward(ctx, q, mask, scale: float):  # q (N, T, D), mask (T, T) -> (N, T, T)
        ctx.save_for_backward(q)
        ctx.scale = scale
        return torch.baddbmm(mask, q, q.transpose(1, 2), alpha=scale)

    @staticmethod
    def backward(ctx, grad):
        (q,) = ctx.saved_tensors
        symmetric = grad + grad.transpose(1, 2)
        return torch.baddbmm(q, symmetric, q, beta=0.0, alpha=ctx.scale), None, None


def cpu_training_attention(q, k, v, dropout_p: float) -> torch.Tensor:
    """Causal attention with dropout on the CPU, where SDPA has no fused kernel with dropout and its math
    path scales Q and K apart, builds the mask anew, guards the softmax and draws the mask with
    ``bernoulli_``. Here the scale and the cached additive mask ride in the score product
    (``baddbmm``), the dropout mask comes from ``dropout.keep_mask``, and ``k is q`` (PRISM's Q = K)
    takes the one-product backward of ``_SharedKeyScores``. Work in fp32 for half-precision inputs,
    as SDPA's math path does. q, k (B, H, T, Dk), v (B, H, T, Dv) -> (B, H, T, Dv) in q's dtype.
    """
    B, H, T, Dk = q.shape
    work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    q3 = q.reshape(B * H, T, Dk).to(work)
    mask, scale = additive_causal_mask(T, work), 1.0 / math.sqrt(Dk)
    if k is q:
        scores = _SharedKeyScores.apply(q3, mask, scale)  # (B*H, T, T)
    else:
        scores = torch.baddbmm(mask, q3, k.reshape(B * H, T, Dk).to(work).transpose(1, 2), alpha=scale)
    probs = torch.softmax(scores, dim=-1)
    y = torch.bmm(probs * keep_mask(probs.shape, dropout_p, work), v.reshape(B * H, T, -1).to(work))
    return y.view(B, H, T, -1).to(q.dtype)


def decoding_backends():
    """Context for KV-cache decoding: SDPA without the cuDNN backend.

    On Hopper, SDPA may pick cuDNN, which builds a graph for every new key length; a growing cache
    has a new length at every step, which cost ~45 ms a token on an H100 (benchmarks/RESULTS.md).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


class AttentionKind(nn.Module):
    """The interface of an attention kind. Subclasses set ``name`` and implement ``forward``.

    Hook sites (identities until ``prism_lm.interp.hooked`` makes them TransformerLens HookPoints),
    with TransformerLens's names and shapes: hook_q, hook_k, hook_v (B, T, maps, D) as attention
    reads them (after RoPE), hook_z (B, T, maps, Dv) the per-head outputs after any intervention and
    before the streams are combined, hook_attn_scores and hook_pattern (B, maps, Tq, Tk) on the
    eager path only. Heads are stacked stream by stream (``map_index``)."""

    name: ClassVar[str]
    edit = None  # an interventions.Edit while ``interventions.intervene`` is active
    HOOK_SITES: ClassVar[tuple[str, ...]] = ("hook_q", "hook_k", "hook_v", "hook_z", "hook_attn_scores",
                                             "hook_pattern")

    def add_hook_sites(self) -> None:
        for name in self.HOOK_SITES:
            self.add_module(name, nn.Identity())

    @staticmethod
    def at_site(hook: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """x (B, maps, T, D) through a hook that sees TransformerLens's (B, T, maps, D); views only."""
        return hook(x.transpose(1, 2)).transpose(1, 2)

    @classmethod
    def streams(cls, cfg: ModelConfig) -> tuple[str, ...]:
        """Names of the head streams, in the order their heads are stacked."""
        return ("main",)

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        """Raise PrismError when ``cfg``'s shapes do not suit this kind."""

    @classmethod
    def uses_rope(cls, cfg: ModelConfig) -> bool:
        """Whether Q/K carry rotary positions (a model without a learned position embedding needs them)."""
        return False

    @classmethod
    def matmuls(cls, cfg: ModelConfig) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of every weight matmul one token goes through, a weight used twice listed twice."""
        C = cfg.n_embd
        return [(C, 3 * C), (C, C)]  # fused Q/K/V, output projection

    @classmethod
    def map_widths(cls, cfg: ModelConfig) -> tuple[int, int]:
        """Total query/key width and total value width over all attention maps of one layer (the
        QK^T and AV matmuls, whose cost grows with the context)."""
        return cfg.n_embd, cfg.n_embd

    def current_lambda(self) -> torch.Tensor | None:
        """The weight of the subtracted stream (PRISM's λ, DIFF's learned λ; an intervention's value
        while one sets it); None without one."""
        own = self.own_lambda()
        if own is not None and self.edit is not None and self.edit.lam is not None:
            return torch.tensor(self.edit.lam, device=own.device, dtype=own.dtype)
        return own

    def own_lambda(self) -> torch.Tensor | None:
        """The layer's own λ (scheduled buffer or learned); None for kinds without a subtracted stream."""
        return None

    def map_index(self, stream: int, head: int) -> int:
        """Where head ``head`` of stream ``stream`` sits on the head axis of the per-head outputs."""
        return stream * self.n_head + head

    def edited(self, y: torch.Tensor) -> torch.Tensor:
        """Per-head outputs y (B, maps, T, Dv) after the active intervention (unchanged without one)."""
        return y if self.edit is None else self.edit.apply(y, self)

    def set_scheduled_lambda(self, value: float) -> None:
        """Take λ(t) from the training loop's schedule (a no-op for kinds without a scheduled λ)."""

    def reset_parameters(self) -> None:
        """Kind-specific init, run after the model's generic N(0, 0.02) pass."""


class LearnedLambda(nn.Module):
    """λ = exp(λq1·λk1) - exp(λq2·λk2) + λ_init, the Differential-Transformer parametrisation."""

    def __init__(self, dim: int, lambda_init: float):
        super().__init__()
        self.lambda_init = lambda_init
        # a tensor, not a float, in forward: compiled blocks with different λ_init then share one graph
        self.register_buffer("init", torch.tensor(float(lambda_init)), persistent=False)
        self.q1, self.k1, self.q2, self.k2 = (nn.Parameter(torch.zeros(dim)) for _ in range(4))
        self.reset_parameters()

    def reset_buffers(self) -> None:
        """Recompute the non-persistent buffer (loaders that build on the meta device leave it empty)."""
        self.init.fill_(self.lambda_init)

    def reset_parameters(self) -> None:
        for p in (self.q1, self.k1, self.q2, self.k2):
            nn.init.normal_(p, mean=0.0, std=0.1)

    def forward(self) -> torch.Tensor:
        first = torch.exp(torch.sum(self.q1 * self.k1).float())
        second = torch.exp(torch.sum(self.q2 * self.k2).float())
        return first - second + self.init.float()


class PrismAttention(AttentionKind):
    name = "prism"

    @classmethod
    def streams(cls, cfg: ModelConfig) -> tuple[str, ...]:
        return ("signal", "noise") if cfg.noise_stream else ("signal",)

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        if cfg.head_dim % 2:
            raise PrismError(f"PRISM head dim (n_embd/n_head*expansion_ratio = {cfg.head_dim}) must be even for RoPE")

    @classmethod
    def uses_rope(cls, cfg: ModelConfig) -> bool:
        return True

    @classmethod
    def matmuls(cls, cfg: ModelConfig) -> list[tuple[int, int]]:
        width = len(cls.streams(cfg)) * cfg.n_head * cfg.head_dim
        return [(cfg.n_embd, width), (width, cfg.n_embd)]  # U z, then y U (W_O = U^T, or its untied copy)

    @classmethod
    def map_widths(cls, cfg: ModelConfig) -> tuple[int, int]:
        width = len(cls.streams(cfg)) * cfg.n_head * cfg.head_dim
        return width, width

    @classmethod
    def dictionary_shape(cls, cfg: ModelConfig) -> tuple[int, int, int, int]:
        """U's rows as (streams, heads, D, C): stream 0 (signal) first, then head by head."""
        return len(cls.streams(cfg)), cfg.n_head, cfg.head_dim, cfg.n_embd

    @classmethod
    def rope_bases(cls, cfg: ModelConfig) -> list[float]:
        """RoPE base of each stream: signal rope_base·m and noise rope_base/m ("base" scaling), or
        rope_base for both ("frequency" scaling, where m scales the frequencies: ``rope_scales``)."""
        m = cfg.multiplier if cfg.rope_scaling == "base" else 1.0
        return [cfg.rope_base * m, cfg.rope_base / m][: len(cls.streams(cfg))]

    @classmethod
    def rope_scales(cls, cfg: ModelConfig) -> list[float]:
        """Each stream's frequency factor: m and 1/m with "frequency" scaling, else 1."""
        m = cfg.multiplier if cfg.rope_scaling == "frequency" else 1.0
        return [m, 1.0 / m][: len(cls.streams(cfg))]

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.stream_names = self.streams(cfg)
        self.n_streams, self.n_head, self.head_dim = self.dictionary_shape(cfg)[:3]
        width = self.n_streams * self.n_head * self.head_dim
        self.u_proj = nn.Linear(cfg.n_embd, width, bias=False)  # the dictionary U, rows = atoms
        self.out_proj = None if cfg.tied_output else nn.Linear(width, cfg.n_embd, bias=False)
        self.output_scale = 1.0 / math.sqrt(2 * cfg.n_head * cfg.expansion_ratio)
        self.rotary = Rotary(self.head_dim, self.rope_bases(cfg), cfg.block_size, self.rope_scales(cfg))
        self.learned_lambda = None
        if cfg.learns_lambda:
            self.learned_lambda = LearnedLambda(self.head_dim, cfg.lambda_start)
        else:  # set from the step by the training loop; a buffer so checkpoints keep it
            self.register_buffer("lambda_", torch.tensor(float(cfg.lambda_start)))
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
                need_weights: bool = False):
        B, T, C = x.shape
        S, H, D = self.n_streams, self.n_head, self.head_dim
        u = self.u_proj(x).view(B, T, S * H, D).transpose(1, 2)  # (B, S*H, T, D): Q = K = V = U z
        qk = self.rotary(u, positions)  # RoPE on Q/K only; V stays unrotated
        if isinstance(self.hook_q, nn.Identity) and isinstance(self.hook_k, nn.Identity):
            q = k = qk  # one tensor: attention may use Q = K (cpu_training_attention)
        else:
            q, k = self.at_site(self.hook_q, qk), self.at_site(self.hook_k, qk)
        v = self.at_site(self.hook_v, u)
        k, v, mask = cache.update(k, v, positions) if cache is not None else (k, v, None)
        y, probs = attend(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                          eager=eager, need_weights=need_weights, mask=mask, hooks=self)  # (B, S*H, T, D)
        y = self.at_site(self.hook_z, self.edited(y))
        if S == 2:  # signal heads +1, noise heads -λ
            lam = self.current_lambda().to(y.dtype).reshape(1)
            sign = torch.cat([y.new_ones(H), -lam.expand(H)]).view(1, S * H, 1, 1)
            y = y * sign
        y = y.transpose(1, 2).reshape(B, T, S * H * D)
        w_out = self.u_proj.weight if self.out_proj is None else self.out_proj.weight.t()  # (S*H*D, C)
        out = (y @ w_out.to(y.dtype)) * self.output_scale
        return self.resid_dropout(out), probs


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
        self.dropout = cfg.dropout
        self.resid_dropout = Dropout(cfg.dropout)
        self.add_hook_sites()

    def forward(self, x, positions: torch.Tensor | None = None, cache=None, eager: bool = False,
                need_weights: bool = False):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, H, T, hd)
        q, k = self.rotate(q, positions), self.rotate(k, positions)
        q, k, v = self.at_site(self.hook_q, q), self.at_site(self.hook_k, k), self.at_site(self.hook_v, v)
        k, v, mask = cache.update(k, v, positions) if cache is not None else (k, v, None)
        y, probs = attend(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                          eager=eager, need_weights=need_weights, mask=mask, hooks=self)
        y = self.at_site(self.hook_z, self.edited(y)).transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y)), probs

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
                need_weights: bool = False):
        B, T, C = x.shape
        H, d = self.n_head, self.head_dim
        q = self.rotary(self.q_proj(x).view(B, T, 2 * H, d).transpose(1, 2), positions)  # (B, 2H, T, d)
        k = self.rotary(self.k_proj(x).view(B, T, 2 * H, d).transpose(1, 2), positions)  # (B, 2H, T, d)
        v = self.v_proj(x).view(B, T, H, 2 * d).transpose(1, 2)  # (B, H, T, 2d)
        q, k, v = self.at_site(self.hook_q, q), self.at_site(self.hook_k, k), self.at_site(self.hook_v, v)
        k, v, mask = cache.update(k, v, positions) if cache is not None else (k, v, None)
        y, probs = attend(q, k, v.repeat_interleave(2, dim=1), dropout_p=0.0,
                          eager=eager, need_weights=need_weights, mask=mask, hooks=self)  # (B, 2H, T, 2d)
        y = self.at_site(self.hook_z, self.edited(y))
        y = y.view(B, H, 2, T, 2 * d)
        y = y[:, :, 0] - self.current_lambda().to(y.dtype) * y[:, :, 1]  # (B, H, T, 2d)
        y = self.subln(y) * self.subln_scale.to(y.dtype)
        y = y.transpose(1, 2).reshape(B, T, C)
        if probs is not None:  # regroup to stream-major: positive maps of all heads, then negative
            probs = probs.view(B, H, 2, *probs.shape[-2:]).transpose(1, 2).reshape_as(probs)
        return self.resid_dropout(self.out_proj(y)), probs


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


ATTENTION_KINDS: dict[str, type[AttentionKind]] = {
    kind.name: kind for kind in (PrismAttention, GPTAttention, GPTRoPEAttention, DiffAttention, CrateAttention)
}
