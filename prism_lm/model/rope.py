"""Rotary position embedding with one base per stream, always in fp32.

Design choices:
- The paper (and the official code) rotate *interleaved* pairs (x[2i], x[2i+1]). We rotate
  *contiguous halves* (x[i], x[i + D/2]) instead, which needs no strided gather. The two are the
  same model up to a fixed permutation of each head's coordinates; PRISM's attention is invariant
  under it because Q, K and V all come from the same rows of U (see ``interleaved_to_halves``,
  used when importing official checkpoints and by the test reference).
- Frequencies follow the official code op for op: inv_freq = 1 / base^(arange(D/2) / (D/2)),
  angle = position * inv_freq, all fp32, so imported checkpoints reproduce to 1e-5. In bf16 the
  positions 0..511 would collapse to 385 distinct values, hence fp32 whatever the model dtype.
- Tables are plain attributes, not buffers, computed once: they follow the module to its device
  but ``model.to(bfloat16)`` cannot down-cast them, and nothing is filled in lazily, which would
  make ``torch.compile`` recompile on the second call.
"""

from __future__ import annotations

import torch
from torch import nn


def inv_frequencies(head_dim: int, base: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(D/2,): inv_freq_i = base^(-i/(D/2)); fp32 for the model, fp64 for the resonance numerics."""
    half = head_dim // 2
    exponent = torch.arange(0, half, dtype=dtype) / half
    return 1.0 / (base ** exponent)


def interleaved_to_halves(head_dim: int) -> torch.Tensor:
    """Index list mapping one head's interleaved layout to the halves layout: new[j] = old[perm[j]]."""
    return torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])


def stream_frequencies(head_dim: int, bases: list[float], scales: list[float] | None = None,
                       dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Each stream's (D/2,) angular frequencies: scales[s] · base[s]^(-i/(D/2)) (scales default to 1)."""
    scales = [1.0] * len(bases) if scales is None else scales
    return [inv_frequencies(head_dim, b, dtype) * s if s != 1.0 else inv_frequencies(head_dim, b, dtype)
            for b, s in zip(bases, scales, strict=True)]


class Rotary(nn.Module):
    """RoPE for S streams of heads, each stream with its own base and frequency scale.

    Input (B, S*H, T, D) with the S streams stacked head-wise (stream 0 first); output same shape
    and dtype, rotated in fp32.
    """

    def __init__(self, head_dim: int, bases: list[float], max_len: int, scales: list[float] | None = None):
        super().__init__()
        self.head_dim, self.bases, self.max_len = head_dim, list(bases), max_len
        self.scales = [1.0] * len(self.bases) if scales is None else list(scales)
        self.cos, self.sin = self._compute()  # (S, 1, max_len, D/2) fp32

    def _compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(self.max_len, dtype=torch.float32)
        angles = torch.stack([torch.outer(positions, f)
                              for f in stream_frequencies(self.head_dim, self.bases, self.scales)])
        return angles.cos()[:, None], angles.sin()[:, None]

    def extend(self, max_len: int) -> None:
        """Tables for ``max_len`` positions (evaluation beyond the training length), on the same device."""
        if max_len > self.max_len:
            device = self.cos.device
            self.max_len = max_len
            cos, sin = self._compute()
            self.cos, self.sin = cos.to(device), sin.to(device)

    def _apply(self, fn, recurse=True):
        """Follow the module to a new device (``.to``, ``.cuda``) but never to a new dtype."""
        device = fn(self.cos[:0]).device  # probe from where the tables are: a dtype-only move keeps it
        self.cos, self.sin = self.cos.to(device), self.sin.to(device)
        return super()._apply(fn, recurse)

    def tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (S, 1, max_len, D/2), fp32, on ``device``."""
        if self.cos.is_meta:  # the module was built on the meta device (as loaders do): compute them now
            self.cos, self.sin = self._compute()
        return self.cos.to(device), self.sin.to(device)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, S*H, T, D) at ``positions`` (T,) int64, by default 0..T-1, or (B, T): each row its own
        (a padded batch, whose positions count its real tokens only)."""
        B, SH, T, D = x.shape
        S = len(self.bases)
        cos, sin = self.tables(x.device)
        if positions is None:
            cos, sin = cos[:, :, :T], sin[:, :, :T]  # (S, 1, T, D/2)
        elif positions.dim() == 2:  # (B, T) -> (B, S, 1, T, D/2)
            cos, sin = (t[:, 0][:, positions].transpose(0, 1).unsqueeze(2) for t in (cos, sin))
        else:
            cos, sin = cos[:, :, positions], sin[:, :, positions]
        # unbind, not two slices: the backward of a slice zero-fills a full-size gradient, twice
        x1, x2 = x.float().view(B, S, SH // S, T, 2, D // 2).unbind(-2)
        out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
        return out.view(B, SH, T, D).to(x.dtype)
