"""Schedules as pure functions of the step, so they are right after a resume: learning rate and λ."""

from __future__ import annotations

import math

from prism_lm.config import OptimConfig


def lr_at(step: int, cfg: OptimConfig) -> float:
    """Linear warmup from 0 over ``warmup_iters``, then cosine decay to ``min_lr`` at ``lr_decay_iters``."""
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    if step >= cfg.lr_decay_iters:
        return cfg.min_lr
    progress = (step - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def prism_lambda_at(step: int, t_max: int, lambda_start: float, lambda_end: float, schedule: str = "cosine"
                    ) -> float:
    """λ(t) = λ0 + (λ1 - λ0) * ½(1 - cos(π min(1, t / T_max))); λ0 throughout for ``schedule="constant"``."""
    if schedule == "constant":
        return lambda_start
    progress = min(1.0, max(0.0, step / t_max)) if t_max > 0 else 1.0
    return lambda_start + (lambda_end - lambda_start) * 0.5 * (1.0 - math.cos(math.pi * progress))
