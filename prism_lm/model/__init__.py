"""Model: RoPE tables, the attention kinds, and the language model built from a ModelConfig."""

from prism_lm.model.attention import KVCache, attend
from prism_lm.model.transformer import PrismLM, prism_lambda_at, sample_next

__all__ = ["KVCache", "PrismLM", "attend", "prism_lambda_at", "sample_next"]
