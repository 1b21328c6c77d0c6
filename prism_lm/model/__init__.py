"""Model: RoPE tables, the attention kinds, the language model, and generation (its own module)."""

from prism_lm.model.attention import ATTENTION_KINDS, AttentionKind, attend
from prism_lm.model.generate import KVCache, generate, sample_next
from prism_lm.model.transformer import LMOutput, PrismLM

__all__ = ["ATTENTION_KINDS", "AttentionKind", "KVCache", "LMOutput", "PrismLM", "attend", "generate", "sample_next"]
