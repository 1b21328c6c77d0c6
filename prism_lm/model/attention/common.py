"""What every attention kind shares: the ``AttentionKind`` interface, softmax attention (``attend``),
the CPU training path with dropout, and DIFF's and learned-λ PRISM's ``LearnedLambda``.

Every kind is an ``AttentionKind``: it maps (B, T, C) at ``positions`` (T,) (default 0..T-1) ->
(B, T, C), takes an optional KV cache (decoding, ``generate.py``) and ``need_weights`` (analysis),
and declares what the rest of prism-lm asks of it: its config checks, stream names, FLOP widths,
current λ, init, and for PRISM the dictionary's layout and RoPE bases. Each kind has its own file
in this package; ``ATTENTION_KINDS`` (``__init__.py``) is the registry that config checks, CLI,
metrics, bench, analysis and import read. Shared design choices:
- ``attend`` is the only place that computes softmax attention. Its fast path is one call of
  ``F.scaled_dot_product_attention`` over all heads of all streams (flash kernels on GPU), except
  for training with dropout on the CPU, where ``cpu_training_attention`` is faster (its docstring
  says why); its eager path writes the softmax out and can return the probabilities. All are
  tested equal, dropout masks included.
- Each kind names its streams (``stream_names``) and stacks their heads along the head axis,
  stream 0 first, so probabilities come back as (B, S*H, Tq, Tk) plus a stream label per head.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from prism_lm.model.config import ModelConfig
from prism_lm.model.dropout import dropout, keep_mask


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

    Hook sites (identities until ``prism_lm.analysis.hooked`` makes them TransformerLens HookPoints),
    with TransformerLens's names and shapes: hook_q, hook_k, hook_v (B, T, maps, D) as attention
    reads them (after RoPE), hook_z (B, T, maps, Dv) the per-head outputs after any intervention and
    before the streams are combined, hook_attn_scores and hook_pattern (B, maps, Tq, Tk) on the
    eager path only, and hook_result (B, T, maps, C): each map's share of the attention output, the
    output bias left out (TransformerLens's convention), so the maps sum to the output less its bias.
    hook_result is computed only while a hook watches it (a (B, T, maps, C) tensor). Heads are stacked
    stream by stream (``map_index``); ``head_weights`` gives each map's W_Q, W_K, W_V, W_O and the b_O."""

    name: ClassVar[str]
    edit = None  # an interventions.Edit while ``interventions.intervene`` is active
    HOOK_SITES: ClassVar[tuple[str, ...]] = ("hook_q", "hook_k", "hook_v", "hook_z", "hook_attn_scores",
                                             "hook_pattern", "hook_result")

    def add_hook_sites(self) -> None:
        for name in self.HOOK_SITES:
            self.add_module(name, nn.Identity())

    @staticmethod
    def cached(k, v, positions, cache, key_mask: torch.Tensor | None, q_len: int):
        """Keys and values after the KV cache (if any), and the mask ``attend`` takes: the cache's, or
        None (causal). ``key_mask`` (B, Tk) bool, False at padding, takes the padded keys out; a padded
        query still sees its own position (its output is never read, but a row of -inf would be NaN).
        The ``q_len`` queries are the last of the Tk keys."""
        k, v, mask = cache.update(k, v, positions) if cache is not None else (k, v, None)
        if key_mask is None:
            return k, v, mask
        tq, tk = q_len, k.size(-2)
        allowed = causal_mask(tq, tk, k.device) if mask is None else mask  # (Tq, Tk)
        own = torch.ones(tq, tk, dtype=torch.bool, device=k.device).tril(tk - tq).triu(tk - tq)  # the diagonal
        return k, v, (allowed & key_mask[:, None, None, :tk].to(k.device)) | own  # (B, 1, Tq, Tk)

    def results_watched(self) -> bool:
        """Whether a hook (or TransformerLens's cache) watches hook_result: the output is then summed
        from the per-map results instead of one matmul (the same numbers, one more tensor)."""
        return bool(self.hook_result._forward_hooks)

    def summed_results(self, z: torch.Tensor, w_o: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """z (B, maps, T, Dv) through each map's w_o (maps, Dv, C) -> hook_result (B, T, maps, C) ->
        their sum (B, T, C), plus the output bias."""
        result = self.hook_result(torch.einsum("bhtd,hdc->bthc", z, w_o.to(z.dtype)))
        out = result.sum(2)
        return out if bias is None else out + bias.to(out.dtype)

    def head_weights(self) -> dict[str, torch.Tensor]:
        """Each map's weights as TransformerLens lays them out: W_Q, W_K (maps, C, Dk), W_V (maps, C, Dv),
        W_O (maps, Dv, C) such that z_h @ W_O[h] is hook_result's map h, and b_O (C,)."""
        raise NotImplementedError(f"{self.name} does not lay out its weights per head")

    # TransformerLens reads these from a block's attention (ActivationCache.compute_head_results)
    W_Q = property(lambda self: self.head_weights()["W_Q"])
    W_K = property(lambda self: self.head_weights()["W_K"])
    W_V = property(lambda self: self.head_weights()["W_V"])
    W_O = property(lambda self: self.head_weights()["W_O"])
    b_O = property(lambda self: self.head_weights()["b_O"])

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
