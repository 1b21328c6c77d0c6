"""The causal language model shared by PRISM and its baselines.

Design choices:
- GPT-2 layout as in nanoGPT: token + learned absolute position embedding, pre-LN blocks
  (attention, residual; GELU MLP 4x, residual), final LayerNorm, LM head tied to the token
  embedding. Only the attention module changes between PRISM, GPT and DIFF, so comparisons
  isolate attention.
- Init as the paper: N(0, 0.02) everywhere, residual projections N(0, 0.02/sqrt(2L)), U orthogonal.
- The model knows nothing of training: no optimizer, no MFU, no schedules. The λ schedule is a
  pure function of the step (``prism_lambda_at``); the loop writes its value with ``set_prism_lambda``.
  Compile/DDP/FSDP wrap the model from outside.
- ``model(idx)`` returns logits (B, T, V); ``model(idx, targets)`` returns (logits, mean CE), or
  (None, mean CE) from a chunked head + loss that never holds all logits (``loss_chunk_size``).
- ``generate`` prefills a KV cache, then feeds one token per step. Past ``block_size`` the
  learned position table ends, so it falls back to recomputing the last ``block_size`` tokens,
  exactly as uncached decoding does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from prism_lm.config import ModelConfig
from prism_lm.model.attention import ATTENTION_CLASSES, KVCache, PrismAttention, decoding_backends
from prism_lm.model.loss import chunked_linear_cross_entropy


def prism_lambda_at(step: int, t_max: int, lambda_start: float, lambda_end: float) -> float:
    """λ(t) = λ0 + (λ1 - λ0) * ½(1 - cos(π min(1, t / T_max)))."""
    progress = min(1.0, max(0.0, step / t_max)) if t_max > 0 else 1.0
    return lambda_start + (lambda_end - lambda_start) * 0.5 * (1.0 - math.cos(math.pi * progress))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.c_proj.is_residual_projection = True
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = ATTENTION_CLASSES[cfg.attention](cfg, layer_idx)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, positions, cache=None, eager=False, need_weights=False):
        a, probs = self.attn(self.ln_1(x), positions, cache=cache, eager=eager, need_weights=need_weights)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, probs


class PrismLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input/output embedding
        self.eager_attention = False  # True: write the softmax out (slow; for tests and analysis)
        self.loss_chunk_size = 0  # > 0: model(idx, targets) returns (None, loss) without full logits
        self.reset_parameters()

    # ------------------------------------------------------------------ init and bookkeeping
    def reset_parameters(self) -> None:
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                std = residual_std if getattr(module, "is_residual_projection", False) else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
        for block in self.blocks:  # after the generic pass: U orthogonal, λ vectors, norms
            if hasattr(block.attn, "reset_parameters"):
                block.attn.reset_parameters()

    def num_params(self, exclude_position_embedding: bool = True) -> int:
        """Unique parameters (the tied head counted once), minus wpe as the official count does."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if exclude_position_embedding else n

    def set_prism_lambda(self, value: float) -> None:
        """Write λ into every PRISM layer whose λ is scheduled (not learned)."""
        for block in self.blocks:
            if isinstance(block.attn, PrismAttention) and block.attn.learned_lambda is None:
                block.attn.lambda_.fill_(value)

    def prism_lambdas(self) -> list[float]:
        """Current λ of every layer that has one (PRISM and DIFF), for logging."""
        return [float(b.attn.current_lambda().detach()) for b in self.blocks if hasattr(b.attn, "current_lambda")]

    # ------------------------------------------------------------------ forward
    def _hidden(self, idx, caches=None, need_weights=False, positions=None):
        """idx (B, T) at ``positions`` (T,) (default: after what a dynamic cache holds) -> (B, T, C)."""
        B, T = idx.shape
        if positions is None:
            if caches and caches[0].static:
                raise ValueError("static KV caches need explicit positions (see generate)")
            offset = caches[0].length if caches else 0
            if offset + T > self.config.block_size:
                raise ValueError(f"sequence of {offset + T} tokens exceeds block_size {self.config.block_size}")
            positions = torch.arange(offset, offset + T, device=idx.device) if caches else None
        pos_emb = self.wpe.weight[:T] if positions is None else self.wpe(positions)
        x = self.drop(self.wte(idx) + pos_emb)  # (B, T, C)
        maps = []
        for i, block in enumerate(self.blocks):
            x, probs = block(x, positions, cache=caches[i] if caches else None,
                             eager=self.eager_attention, need_weights=need_weights)
            maps.append(probs)
        return self.ln_f(x), maps

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) int64 -> logits (B, T, V); with targets (B, T) -> (logits, mean CE, -1 ignored).

        With ``loss_chunk_size`` > 0 and targets, the loss is computed chunk by chunk and the
        logits are returned as None (see ``loss.py``).
        """
        x, _ = self._hidden(idx)
        if targets is not None and self.loss_chunk_size > 0:
            return None, chunked_linear_cross_entropy(x, self.lm_head.weight, targets, self.loss_chunk_size)
        logits = self.lm_head(x)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def forward_with_attention(self, idx: torch.Tensor):
        """Logits plus every layer's attention probabilities (B, S*H, T, T), via the eager path."""
        x, maps = self._hidden(idx, need_weights=True)
        return self.lm_head(x), maps

    # ------------------------------------------------------------------ generation
    def new_kv_caches(self, max_len: int, static: bool = False) -> list[KVCache]:
        return [KVCache(max_len, static) for _ in self.blocks]

    def decode_step(self, idx: torch.Tensor, positions: torch.Tensor | None = None,
                    caches: list[KVCache] | None = None) -> torch.Tensor:
        """idx (B, T) -> logits of the last position (B, V); the head runs on that position only.

        With static caches and a fixed shape this is the function to compile from outside
        (``torch.compile(model.decode_step, mode="reduce-overhead", fullgraph=True)``).
        """
        return self.lm_head(self._hidden(idx, caches, positions=positions)[0][:, -1])

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, stop_token: int | None = None,
                 use_cache: bool = True, generator: torch.Generator | None = None, static_cache: bool = False,
                 decode_step=None) -> torch.Tensor:
        """Extend idx (B, T) by up to ``max_new_tokens``. temperature 0 is greedy.

        With ``stop_token`` a row that emitted it keeps emitting it, and decoding ends early once
        every row has. ``static_cache`` keeps every step's shapes fixed; ``decode_step`` replaces
        ``self.decode_step`` for the one-token steps (a compiled version of it, typically).
        """
        if idx.dim() != 2 or idx.size(1) == 0:
            raise ValueError("generate needs a non-empty (B, T) prompt")
        with decoding_backends():
            return self._generate(idx, max_new_tokens, temperature, top_k, top_p, stop_token, use_cache,
                                  generator, static_cache, decode_step)

    def _generate(self, idx, max_new_tokens, temperature, top_k, top_p, stop_token, use_cache, generator,
                  static_cache, decode_step):
        block = self.config.block_size
        caches = None
        step_fn = decode_step or self.decode_step
        if use_cache and idx.size(1) < block:
            caches = self.new_kv_caches(min(block, idx.size(1) + max_new_tokens), static_cache)
            logits = self.decode_step(idx, torch.arange(idx.size(1), device=idx.device), caches)  # prefill
        else:
            logits = self.decode_step(idx[:, -block:])
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for step in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
            if stop_token is not None:
                nxt = torch.where(done, torch.full_like(nxt, stop_token), nxt)
                done |= nxt == stop_token
            idx = torch.cat([idx, nxt[:, None]], dim=1)
            if step == max_new_tokens - 1 or (stop_token is not None and bool(done.all())):
                break
            if caches is not None and idx.size(1) <= block:
                logits = step_fn(nxt[:, None], torch.full((1,), idx.size(1) - 1, device=idx.device), caches)
            else:  # past the position table: recompute the last block_size tokens
                logits = self.decode_step(idx[:, -block:])
        return idx


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> token ids (B,). temperature <= 0 means argmax."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove = cumulative - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
        logits = logits.scatter(1, order, sorted_logits.masked_fill(remove, float("-inf")))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
