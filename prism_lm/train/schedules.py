"""Schedules as pure functions of the step, so they are right after a resume."""

from __future__ import annotations

import math

from prism_lm.config import OptimConfig
from prism_lm.model.transformer import prism_lambda_at

__all__ = ["lr_at", "prism_lambda_at"]


def lr_at(step: int, cfg: OptimConfig) -> float:
    """Linear warmup from 0 over ``warmup_iters``, then cosine decay to ``min_lr`` at ``lr_decay_iters``."""
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    if step >= cfg.lr_decay_iters:
        return cfg.min_lr
    progress = (step - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)
