"""The attention kinds, one file each, and their registry ``ATTENTION_KINDS`` (adding a kind: a file
here with a subclass of ``AttentionKind``, listed below, plus its tests; ARCHITECTURE.md says more)."""

from prism_lm.model.attention.common import (
    AttentionKind,
    attend,
    causal_mask,
    cpu_training_attention,
    decoding_backends,
)
from prism_lm.model.attention.crate import CrateAttention
from prism_lm.model.attention.diff import DiffAttention
from prism_lm.model.attention.gpt import GPTAttention, GPTRoPEAttention
from prism_lm.model.attention.prism import PrismAttention

ATTENTION_KINDS: dict[str, type[AttentionKind]] = {
    kind.name: kind for kind in (PrismAttention, GPTAttention, GPTRoPEAttention, DiffAttention, CrateAttention)
}

__all__ = ["ATTENTION_KINDS", "AttentionKind", "CrateAttention", "DiffAttention", "GPTAttention", "GPTRoPEAttention",
           "PrismAttention", "attend", "causal_mask", "cpu_training_attention", "decoding_backends"]
