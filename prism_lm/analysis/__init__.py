"""Analysis: attention capture, head statistics, resonance and coding-rate numerics, figures, reports."""

from prism_lm.analysis.capture import AttentionCache, capture_attention, hook_name

__all__ = ["AttentionCache", "capture_attention", "hook_name"]
