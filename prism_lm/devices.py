"""Which torch device a name means: the one rule every command uses (``auto``, ``cpu``, ``cuda``,
``cuda:N``). A leaf: readers (eval, sample, analyze, explore, sweep jobs) import it without
standing on ``train/``."""

from __future__ import annotations

import torch

from prism_lm.errors import PrismError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` is CUDA (this process's local rank) when available, else the CPU; ``cuda`` without an
    index means the local rank's GPU; an unknown name or CUDA without CUDA is a one-line error."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PrismError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PrismError(f"run.device={name!r} but CUDA is not available")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device
