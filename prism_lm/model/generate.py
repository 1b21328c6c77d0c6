"""Generation: KV caches, sampling and the decoding loop, kept apart from the model (as gpt-fast does).

Design choices:
- ``generate`` prefills a KV cache with the prompt, then feeds one token per step through
  ``model.decode_step`` (or a compiled version of it, passed as ``decode_step``). Past
  ``block_size`` the learned position table ends, so it falls back to recomputing the last
  ``block_size`` tokens, exactly as uncached decoding does.
- Decoding runs under ``attention.decoding_backends()`` (SDPA without cuDNN, whose per-shape
  graph builds made a growing cache slower than none on an H100).
- ``KVCache`` has a dynamic mode (grows by appending) and a static one (fixed buffers written at
  explicit positions, plus a mask), whose fixed shapes and addresses CUDA graphs need.
"""

from __future__ import annotations

import torch

from prism_lm.model.attention import decoding_backends


class KVCache:
    """Per-layer keys and values for decoding, allocated on first use (the prefill) like the inputs.

    Dynamic (default): appends at the end and returns the filled prefix, so shapes grow by one
    position per step. Static: writes at the given positions and always returns the whole
    ``max_len`` buffers with a mask of the positions each query may see; every step then has the
    same shapes and the buffers never move, which CUDA graphs need (``torch.compile`` with
    ``mode="reduce-overhead"`` around ``PrismLM.decode_step``).
    """

    def __init__(self, max_len: int, static: bool = False):
        self.max_len, self.static = max_len, static
        self.length = 0  # dynamic caches only: positions filled so far
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def update(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        """Store k (B, Hk, T, Dk) and v (B, Hv, T, Dv) at ``positions`` (T,).

        Returns keys, values and a (T, Tk) bool mask (None for dynamic caches, whose queries are
        the last T of the returned keys, so ``attend`` derives the causal mask itself).
        """
        if self.k is None:
            self.k = k.new_zeros(k.size(0), k.size(1), self.max_len, k.size(3))
            self.v = v.new_zeros(v.size(0), v.size(1), self.max_len, v.size(3))
            self.slots = torch.arange(self.max_len, device=k.device)
            if self.static:
                torch._dynamo.mark_static_address(self.k)
                torch._dynamo.mark_static_address(self.v)
        if self.static:
            self.k.index_copy_(2, positions, k)
            self.v.index_copy_(2, positions, v)
            return self.k, self.v, self.slots[None, :] <= positions[:, None]
        end = self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} > {self.max_len} positions")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end], None


def new_kv_caches(model, max_len: int, static: bool = False) -> list[KVCache]:
    """One cache per layer of ``model``."""
    return [KVCache(max_len, static) for _ in model.blocks]


@torch.no_grad()
def generate(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, stop_token: int | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None, static_cache: bool = False, decode_step=None) -> torch.Tensor:
    """Extend idx (B, T) by up to ``max_new_tokens`` with ``model`` (a ``PrismLM``). temperature 0 is greedy.

    With ``stop_token`` a row that emitted it keeps emitting it, and decoding ends early once
    every row has. ``static_cache`` keeps every step's shapes fixed; ``decode_step`` replaces
    ``model.decode_step`` for the one-token steps (a compiled version of it, typically).
    """
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError("generate needs a non-empty (B, T) prompt")
    with decoding_backends():
        block = model.config.block_size
        caches = None
        step_fn = decode_step or model.decode_step
        if use_cache and idx.size(1) < block:
            caches = new_kv_caches(model, min(block, idx.size(1) + max_new_tokens), static_cache)
            logits = model.decode_step(idx, torch.arange(idx.size(1), device=idx.device), caches)  # prefill
        else:
            logits = model.decode_step(idx[:, -block:])
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
                logits = model.decode_step(idx[:, -block:])
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
