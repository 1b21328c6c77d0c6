"""Dropout whose CPU masks come from 16-bit random fields: the same distribution, 4x fewer draws.

Design choices:
- torch's CPU ``bernoulli_`` draws one uniform per element in a serial kernel: 32 ms for the 4M
  attention probabilities of one paper-width layer at T 256, batch 4, on a 2-core CPU, where a
  multiply of the same tensor takes 1 ms. Here one call of ``random_`` fills 64 random bits per four
  elements and a vectorised comparison of each 16-bit field with a threshold gives the mask (8 ms;
  benchmarks/RESULTS.md, issue 25, has the whole-step effect).
- The drop probability is then p' = round(p·2^16) / 2^16 (0.1 -> 0.1000061), and kept values are
  scaled by 1 / (1 - p'), so that E[dropout(x)] = x exactly. torch's own mask has its rate off by the
  float32 uniform's resolution too (2^-24) and scales by 1 / (1 - p).
- The mask is a plain tensor multiplied in, so autograd's product rule is the backward; it draws from
  torch's default CPU generator, so ``torch.manual_seed`` and the checkpointed RNG state make runs
  repeat exactly as before.
- Elsewhere (CUDA's fused Philox kernel, torch.compile's own RNG) ``F.dropout`` is used unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FIELD_LEVELS = 1 << 16  # each mask element compares one 16-bit field of the random words


def drop_threshold(p: float) -> int:
    """How many of the 2^16 field values drop an element: round(p·2^16), so p' = that / 2^16."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return round(p * FIELD_LEVELS)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype = torch.float32,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """A CPU tensor of ``shape``: 0 where an element is dropped (probability p'), 1/(1-p') elsewhere."""
    threshold = drop_threshold(p)
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None, generator=generator)
    fields = words.view(torch.int16)[:n].view(shape)  # uniform on [-2^15, 2^15)
    keep = torch.ge(fields, threshold - (1 << 15), out=torch.empty(shape, dtype=dtype))
    return keep.mul_(FIELD_LEVELS / (FIELD_LEVELS - threshold))


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``, with the mask of ``keep_mask`` on the CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return F.dropout(x, p, training=True)
    return x * keep_mask(x.shape, p, x.dtype)


class Dropout(nn.Module):
    """``nn.Dropout`` through ``dropout`` (no parameters or buffers: checkpoints are unchanged)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        drop_threshold(p)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
