"""The model's config: one dataclass, validated by the kinds it names.

Design choices:
- The defaults are the paper's PRISM. Each kind (attention in ``attention.py``, MLP in ``mlp.py``)
  checks the shapes it needs, so this file holds only what every model shares.
- ``freq_multiplier`` keeps what the user wrote ("pi", "22/7", 3.0): that is what config files,
  checkpoints and sweep identities record. Its value is resolved once per value, by
  ``multiplier``, which ``validate`` fills; the layers read ``cfg.multiplier`` and never parse.
- ``rope_scaling`` (``ROPE_SCALINGS``) exists to test the paper's conjecture where it can be
  tested: only "frequency" makes the cross-stream ratios depend on m alone, so that rational and
  irrational m differ in kind.
- ``lambda_schedule`` names how λ moves; only ``"learned"`` (``LEARNED_LAMBDA``) concerns the
  model, which then holds λ as parameters. The schedules themselves (names, horizon, λ(t)) belong
  to training (``train/schedules.py``), which validates the name.
- This module imports only the kinds' registries (for validation) and never ``prism_lm.config``,
  so the model package stands alone (the Hugging Face export copies it as it is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prism_lm.errors import PrismError

LEARNED_LAMBDA = "learned"
POSITION_EMBEDDINGS = ("learned", "none")
# How PRISM's multiplier m reaches the two streams' RoPE frequencies (inv_freq_i = b^(-i/(D/2)), b = rope_base)
ROPE_SCALINGS = {
    "base": "the official π-RoPE: signal base b·m, noise base b/m; pair i's ratio ω_s/ω_n is m^(-2i/(D/2)), "
            "so pair 0 turns at 1 rad/token in both streams whatever m is",
    "frequency": "one ladder of base b; signal frequencies times m, noise frequencies divided by m, so every "
                 "matched ratio ω_s/ω_n is exactly m² (rational for m = √2, √(3/2), ...; π² for π)",
}
NAMED_MULTIPLIERS = {
    "pi": math.pi,
    "phi": (1.0 + math.sqrt(5.0)) / 2.0,
    "e": math.e,
    "sqrt2": math.sqrt(2.0),
}


def resolve_multiplier(value: float | str) -> float:
    """The RoPE frequency multiplier m as a float: a number, a name (pi, phi, e, sqrt2) or "p/q"."""
    if isinstance(value, bool):
        raise PrismError(f"freq_multiplier must be a number or a name, got {value!r}")
    if isinstance(value, (int, float)):
        m = float(value)
    elif value in NAMED_MULTIPLIERS:
        m = NAMED_MULTIPLIERS[value]
    else:
        try:
            num, _, den = str(value).partition("/")
            m = float(num) / float(den) if den else float(num)
        except (ValueError, ZeroDivisionError):
            names = ", ".join(NAMED_MULTIPLIERS)
            raise PrismError(
                f"freq_multiplier {value!r} is not a number, a fraction p/q, or one of {names}"
            ) from None
    if not (m > 0 and math.isfinite(m)):
        raise PrismError(f"freq_multiplier must be a finite number > 0, got {value!r}")
    return m


@dataclass
class ModelConfig:
    """Architecture. Defaults: the paper's PRISM (8 layers, 8 heads, C=512, T=512)."""

    attention: str = "prism"  # a kind of prism_lm.model.ATTENTION_KINDS: prism | gpt | gpt-rope | diff | crate
    mlp: str = "gelu"  # a kind of prism_lm.model.MLP_KINDS: gelu | ista
    position_embedding: str = "learned"  # learned (wpe, as GPT-2 and the paper) | none (RoPE kinds only)
    n_layer: int = 8
    n_head: int = 8  # PRISM: heads per stream; DIFF: differential heads (each two maps)
    n_embd: int = 512
    block_size: int = 512
    vocab_size: int = 50304  # 0 in a training config: the data's vocabulary (resolve_vocab_size)
    dropout: float = 0.1
    bias: bool = False  # biases in LayerNorm and MLP (and GPT/DIFF projections)
    # PRISM only
    expansion_ratio: int = 2
    freq_multiplier: float | str = "pi"
    rope_base: float = 10000.0
    rope_scaling: str = "base"  # base: bases rope_base·m and rope_base/m (official) | frequency: see ROPE_SCALINGS
    noise_stream: bool = True
    lambda_schedule: str = "cosine"  # cosine | constant | learned (train/schedules.py)
    lambda_start: float = 0.01
    lambda_end: float = 0.1
    tied_output: bool = True  # W_O = U^T (paper) or a separate learned projection (CRATE)
    final_norm: bool = True  # a LayerNorm before the LM head (GPT-2, PRISM); CRATE's LM has none
    # mlp = "ista" only (CRATE's defaults): one proximal-gradient step of sparse coding
    ista_step_size: float = 0.1  # η
    ista_lambda: float = 0.1  # the sparsity weight λ of the L1 term
    ista_mode: str = "replace"  # replace: ista(ln(x)) replaces the stream (CRATE) | residual: x + ista(ln(x))

    def validate(self, allow_auto_vocab: bool = False) -> None:
        from prism_lm.model.attention import ATTENTION_KINDS  # the kinds own their checks
        from prism_lm.model.mlp import MLP_KINDS

        if self.attention not in ATTENTION_KINDS:
            raise PrismError(f"model.attention must be one of {tuple(ATTENTION_KINDS)}, got {self.attention!r}")
        if self.mlp not in MLP_KINDS:
            raise PrismError(f"model.mlp must be one of {tuple(MLP_KINDS)}, got {self.mlp!r}")
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise PrismError(f"model.position_embedding must be one of {POSITION_EMBEDDINGS}, "
                             f"got {self.position_embedding!r}")
        if self.vocab_size < (0 if allow_auto_vocab else 1):
            raise PrismError(f"model.vocab_size must be >= 1 (0 = from the data in training), got {self.vocab_size}")
        for name in ("n_layer", "n_head", "n_embd", "block_size", "expansion_ratio"):
            if getattr(self, name) < 1:
                raise PrismError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise PrismError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise PrismError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not all(math.isfinite(v) for v in (self.lambda_start, self.lambda_end)):
            raise PrismError(f"model.lambda_start and lambda_end must be finite, got {self.lambda_start}, "
                             f"{self.lambda_end}")
        self._multiplier = (self.freq_multiplier, resolve_multiplier(self.freq_multiplier))
        if not (self.rope_base > 0 and math.isfinite(self.rope_base)):
            raise PrismError(f"model.rope_base must be a finite number > 0, got {self.rope_base}")
        if self.rope_scaling not in ROPE_SCALINGS:
            raise PrismError(f"model.rope_scaling must be one of {tuple(ROPE_SCALINGS)}, got {self.rope_scaling!r}")
        kind = ATTENTION_KINDS[self.attention]
        if self.rope_scaling != "base" and not hasattr(kind, "rope_scales"):
            raise PrismError(f"model.rope_scaling = {self.rope_scaling!r} applies to PRISM's two streams; "
                             f"{self.attention!r} attention has one RoPE ladder (leave it at 'base')")
        if self.position_embedding == "none" and not kind.uses_rope(self):
            raise PrismError(f"model.position_embedding = 'none' leaves {self.attention!r} attention with no position "
                             "information (it has no RoPE); use 'learned' or a RoPE kind (prism, gpt-rope, diff)")
        kind.check_config(self)
        MLP_KINDS[self.mlp].check_config(self)

    @property
    def multiplier(self) -> float:
        """m as a float, resolved once per value of ``freq_multiplier``."""
        cached = getattr(self, "_multiplier", None)
        if cached is None or cached[0] != self.freq_multiplier:
            self._multiplier = cached = (self.freq_multiplier, resolve_multiplier(self.freq_multiplier))
        return cached[1]

    @property
    def learns_lambda(self) -> bool:
        """λ is the model's parameters (``lambda_schedule = "learned"``), not a value training writes in."""
        return self.lambda_schedule == LEARNED_LAMBDA

    @property
    def head_dim(self) -> int:
        """PRISM's per-head dictionary width D = (C/H)·R."""
        return self.n_embd // self.n_head * self.expansion_ratio
