"""Schedules as pure functions of the step, so they are right after a resume: learning rate and λ.

This module owns both schedules' values: both horizons (0 means "the run's ``max_iters``", the
same rule for ``optim.lr_decay_iters`` and ``optim.lambda_anneal_iters``) and the values at a step.
The λ schedule's names are the knob's, ``model.prism.lambda_schedule`` (``model.config.LAMBDA_SCHEDULES``;
"learned" hands λ to the model as parameters, so no value is written in).
"""

from __future__ import annotations

import math

from prism_lm.config import TrainConfig


def lr_horizon(cfg: TrainConfig) -> int:
    """The step where the learning rate reaches ``min_lr``: ``lr_decay_iters``, or ``max_iters`` for 0."""
    return cfg.optim.lr_decay_iters or cfg.run.max_iters


def lambda_horizon(cfg: TrainConfig) -> int:
    """T_max of the λ schedule: ``lambda_anneal_iters``, or ``max_iters`` for 0."""
    return cfg.optim.lambda_anneal_iters or cfg.run.max_iters


def horizons_follow_max_iters(cfg: TrainConfig) -> bool:
    """Whether changing ``run.max_iters`` would change a schedule (and so an exact resume)."""
    return not (cfg.optim.lr_decay_iters and cfg.optim.lambda_anneal_iters)


def lr_value(step: int, lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """Linear warmup from 0 over ``warmup_iters``, then cosine decay to ``min_lr`` at ``decay_iters``."""
    if step < warmup_iters:
        return lr * (step + 1) / (warmup_iters + 1)
    if step >= decay_iters:
        return min_lr
    progress = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def lr_at(step: int, cfg: TrainConfig) -> float:
    o = cfg.optim
    return lr_value(step, o.lr, o.min_lr, o.warmup_iters, lr_horizon(cfg))


def lambda_value(step: int, t_max: int, lambda_start: float, lambda_end: float, schedule: str = "cosine") -> float:
    """λ(t) = λ0 + (λ1 - λ0) * ½(1 - cos(π min(1, t / T_max))); λ0 throughout for ``schedule="constant"``."""
    if schedule == "constant":
        return lambda_start
    progress = min(1.0, max(0.0, step / t_max)) if t_max > 0 else 1.0
    return lambda_start + (lambda_end - lambda_start) * 0.5 * (1.0 - math.cos(math.pi * progress))


def lambda_at(step: int, cfg: TrainConfig) -> float | None:
    """The λ the loop writes into the model at ``step``; None when the model learns λ itself."""
    p = cfg.model.prism
    if p.learns_lambda:
        return None
    return lambda_value(step, lambda_horizon(cfg), p.lambda_start, p.lambda_end, p.lambda_schedule)
