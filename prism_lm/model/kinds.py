"""The kinds' registries together, and the one check of a whole model config: its shared fields and
sections (``ModelConfig.validate``), then what only the kinds know (their names, their shapes, RoPE
against the position embedding). Every place that builds or loads a model calls ``validate_model``."""

from __future__ import annotations

from prism_lm.errors import PrismError
from prism_lm.model.attention import ATTENTION_KINDS
from prism_lm.model.config import ModelConfig
from prism_lm.model.mlp import MLP_KINDS

__all__ = ["ATTENTION_KINDS", "MLP_KINDS", "validate_model"]


def validate_model(cfg: ModelConfig, allow_auto_vocab: bool = False) -> None:
    """Raise PrismError naming the first thing ``cfg`` gets wrong (``allow_auto_vocab``: vocab_size 0,
    "from the data", as a training config may say)."""
    if cfg.attention not in ATTENTION_KINDS:
        raise PrismError(f"model.attention must be one of {tuple(ATTENTION_KINDS)}, got {cfg.attention!r}")
    if cfg.mlp not in MLP_KINDS:
        raise PrismError(f"model.mlp must be one of {tuple(MLP_KINDS)}, got {cfg.mlp!r}")
    cfg.validate(allow_auto_vocab)
    kind = ATTENTION_KINDS[cfg.attention]
    if cfg.prism.rope_scaling != "base" and not hasattr(kind, "rope_scales"):
        raise PrismError(f"model.prism.rope_scaling = {cfg.prism.rope_scaling!r} applies to PRISM's two streams; "
                         f"{cfg.attention!r} attention has one RoPE ladder (leave it at 'base')")
    if cfg.gpt.output_scale != 1.0 and not hasattr(kind, "qkv_weights"):  # GPT's layout: gpt, gpt-rope, crate
        raise PrismError(f"model.gpt.output_scale applies to GPT's attention (gpt, gpt-rope, crate); {cfg.attention!r} "
                         "attention has its own output (leave it at 1)")
    if cfg.position_embedding == "none" and not kind.uses_rope(cfg):
        raise PrismError(f"model.position_embedding = 'none' leaves {cfg.attention!r} attention with no position "
                         "information (it has no RoPE); use 'learned' or a RoPE kind (prism, gpt-rope, diff)")
    kind.check_config(cfg)
    MLP_KINDS[cfg.mlp].check_config(cfg)
