"""The causal language model shared by PRISM and its baselines.

Design choices:
- GPT-2 layout as in nanoGPT: token + learned absolute position embedding, pre-LN blocks
  (attention, residual; GELU MLP 4x, residual), final LayerNorm, LM head tied to the token
  embedding. Only the attention module changes between PRISM, GPT and DIFF, so comparisons
  isolate attention. ``final_norm = false`` drops the final LayerNorm (CRATE's LM has none: with
  ``attention = "crate"``, ``mlp = "ista"`` and ``bias = true`` this model is CRATE's, loadable
  from its checkpoints, ``checkpoint/crate.py``). The MLP is a kind too (``mlp/``: each kind
  says whether the block adds its output to the residual stream or replaces the stream by it), and
  the position embedding
  can be left out (``position_embedding = "none"``) for kinds whose Q/K carry RoPE.
- Init as the paper: N(0, 0.02) everywhere, residual projections N(0, 0.02/sqrt(2L)), U orthogonal.
- The model knows nothing of training: no optimizer, no MFU, no schedules. It holds λ's current
  value only; the schedule lives in ``train/schedules.py`` and the loop writes λ(t) with
  ``set_scheduled_lambda``. Compile/DDP/FSDP wrap the model from outside.
- ``model(idx, targets=None, *, loss_chunk=0, eager=False)`` always returns an ``LMOutput``
  (logits, loss): logits (B, T, V); loss the mean CE when targets are given. With ``loss_chunk``
  > 0 and targets the head and loss run chunk by chunk and logits is None (``loss.py``); ``eager``
  writes the softmax out instead of calling SDPA (tests, analysis). Both are arguments, never
  attributes set from outside.
- Without wpe, nothing in the model is tied to ``block_size`` but the RoPE tables:
  ``extend_positions(n)`` recomputes them for n positions, so a model can be evaluated beyond its
  training length (the long-context test). With wpe it is refused: there are no positions to add.
- ``decode_step`` is the one-token forward with KV caches that generation compiles from outside;
  generation itself (caches, sampling, the loop) is ``generate.py``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from prism_lm.errors import PrismError
from prism_lm.model.config import ModelConfig
from prism_lm.model.dropout import Dropout
from prism_lm.model.kinds import ATTENTION_KINDS, MLP_KINDS, validate_model
from prism_lm.model.loss import chunked_linear_cross_entropy, lm_cross_entropy
from prism_lm.model.rope import Rotary


class LMOutput(NamedTuple):
    logits: torch.Tensor | None  # (B, T, V); None from the chunked loss
    loss: torch.Tensor | None  # mean cross-entropy when targets were given


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = ATTENTION_KINDS[cfg.attention](cfg, layer_idx)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP_KINDS[cfg.mlp](cfg, layer_idx)
        for name in self.HOOK_SITES:  # identities until prism_lm.analysis.hooked makes them HookPoints
            self.add_module(name, nn.Identity())

    HOOK_SITES = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")

    def forward(self, x, positions, cache=None, eager=False, need_weights=False, key_mask=None):  # x (B, T, C)
        x = self.hook_resid_pre(x)
        a, probs = self.attn(self.ln_1(x), positions, cache=cache, eager=eager, need_weights=need_weights,
                             key_mask=key_mask)
        x = self.hook_resid_mid(x + self.hook_attn_out(a))
        m = self.hook_mlp_out(self.mlp(self.ln_2(x)))
        x = self.hook_resid_post(x + m if self.mlp.residual else m)
        return x, probs


class PrismLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        validate_model(cfg)
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.position_embedding == "learned" else None
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias) if cfg.final_norm else nn.Identity()
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input/output embedding
        self.hook_embed, self.hook_pos_embed = nn.Identity(), nn.Identity()  # TransformerLens's names
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
            block.attn.reset_parameters()
            block.mlp.reset_parameters()

    def num_params(self, exclude_position_embedding: bool = True) -> int:
        """Unique parameters (the tied head counted once), minus wpe as the official count does."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if exclude_position_embedding and self.wpe is not None else n

    def set_scheduled_lambda(self, value: float) -> None:
        """Write λ(t) into every layer whose λ is scheduled (PRISM's, unless learned)."""
        for block in self.blocks:
            block.attn.set_scheduled_lambda(value)

    def lambdas(self) -> list[float]:
        """Current λ of every layer that has one (PRISM and DIFF), for logging."""
        values = [block.attn.current_lambda() for block in self.blocks]
        return [float(v.detach()) for v in values if v is not None]

    @property
    def max_positions(self) -> int:
        """Positions the model can take: block_size, or more after ``extend_positions``."""
        return getattr(self, "_max_positions", self.config.block_size)

    def extend_positions(self, n: int) -> None:
        """Let the model run on sequences of up to ``n`` tokens (no learned position embedding only)."""
        if n <= self.max_positions:
            return
        if self.wpe is not None:
            raise PrismError(f"a model with a learned position embedding has {self.config.block_size} positions; "
                             f"{n} needs model.position_embedding = 'none' (RoPE only)")
        for module in self.modules():
            if isinstance(module, Rotary):
                module.extend(n)
        self._max_positions = n

    # ------------------------------------------------------------------ forward
    def hidden_states(self, idx, caches=None, need_weights=False, positions=None, eager=False, key_mask=None):
        """idx (B, T) at ``positions`` (T,) (default: after what a dynamic cache holds) -> the final
        LayerNorm's output (B, T, C) and each layer's attention probabilities (None unless
        ``need_weights``). ``caches``: one per layer, anything with ``update(k, v, positions)``,
        ``length`` and ``static`` (``generate.KVCache``, or the Hugging Face export's adapter).
        A padded batch gives ``key_mask`` (B, Tk) bool, False at padding (Tk: the cached keys and
        these), and ``positions`` (B, T) counting each row's real tokens (dynamic caches only)."""
        B, T = idx.shape
        if positions is None:
            if caches and caches[0].static:
                raise ValueError("static KV caches need explicit positions (see generate)")
            offset = caches[0].length if caches else 0
            if offset + T > self.max_positions:
                raise ValueError(f"sequence of {offset + T} tokens exceeds the model's {self.max_positions} positions "
                                 f"(block_size {self.config.block_size})")
            positions = torch.arange(offset, offset + T, device=idx.device) if caches else None
        x = self.hook_embed(self.wte(idx))  # (B, T, C)
        if self.wpe is not None:
            pos = self.wpe.weight[:T] if positions is None else self.wpe(positions)  # (T, C)
            x = x + self.hook_pos_embed(pos.expand(B, T, -1))  # a view: TransformerLens's (B, T, C)
        x = self.drop(x)
        maps = []
        for i, block in enumerate(self.blocks):
            x, probs = block(x, positions, cache=caches[i] if caches else None,
                             eager=eager, need_weights=need_weights, key_mask=key_mask)
            maps.append(probs)
        return self.ln_f(x), maps

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, loss_chunk: int = 0,
                eager: bool = False, reduction: str = "mean") -> LMOutput:
        """idx (B, T) int64 -> LMOutput(logits (B, T, V), CE against targets (B, T), -1 ignored).

        ``reduction``: "mean" (training), "sum" (evaluation over whole splits) or "none" (per-token,
        (B, T)). With ``loss_chunk`` > 0 and targets, the mean loss is computed chunk by chunk and
        logits is None.
        """
        x, _ = self.hidden_states(idx, eager=eager)
        if targets is not None and loss_chunk > 0:
            if reduction != "mean":
                raise ValueError("the chunked loss computes the mean only")
            return LMOutput(None, chunked_linear_cross_entropy(x, self.lm_head.weight, targets, loss_chunk))
        logits = self.lm_head(x)
        return LMOutput(logits, None if targets is None else lm_cross_entropy(logits, targets, reduction))

    def forward_with_attention(self, idx: torch.Tensor):
        """Logits plus every layer's attention probabilities (B, S*H, T, T), via the eager path."""
        x, maps = self.hidden_states(idx, need_weights=True)
        return self.lm_head(x), maps

    def decode_step(self, idx: torch.Tensor, positions: torch.Tensor | None = None, caches=None,
                    eager: bool = False) -> torch.Tensor:
        """idx (B, T) -> logits of the last position (B, V); the head runs on that position only.

        With static caches and a fixed shape this is the function to compile from outside
        (``torch.compile(model.decode_step, mode="reduce-overhead", fullgraph=True)``).
        """
        return self.lm_head(self.hidden_states(idx, caches, positions=positions, eager=eager)[0][:, -1])
