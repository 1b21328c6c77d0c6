"""Interventions: set λ, silence a stream, zero or mean-ablate chosen heads, for every attention kind.

    from prism_lm.model.interventions import intervene
    with intervene(model, lam=0.0):                                 # λ = 0 in every layer that has one
        ...
    with intervene(model, zero_streams=["noise"], layers=[3]):      # layer 3's noise heads output nothing
        ...
    with intervene(model, zero_heads=[(7, "signal", 2)], mean_heads=[(0, "main", 1)]):
        ...

Design choices:
- One mechanism for every kind: each attention layer's per-head outputs (before the streams are
  weighted and projected) pass through ``AttentionKind.edited``, and ``current_lambda`` returns the
  intervention's λ while one sets it. So learned λ (PRISM's ``learned``, DIFF's) is overridden like
  the scheduled one, which ``set_scheduled_lambda`` alone cannot do.
- Heads are named as the analysis names them: (layer, stream, head) with the kind's stream names
  (PRISM signal/noise, DIFF positive/negative, GPT main). Zeroing PRISM's noise stream is the same
  model as λ = 0 (tested to 1e-6); zeroing DIFF's negative stream leaves A1 V of each head.
- Mean ablation replaces a head's output by its mean over the batch and positions of the same
  forward pass (not a dataset mean), so it is meant for whole windows, not for one-token decoding.
- Blocks nest and compose: an inner block adds its silenced streams and heads to the outer one's,
  and its λ, when it sets one, wins until it exits.
- Everything is undone when the block exits, also on an exception; bad names are one-line errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from prism_lm.errors import PrismError


@dataclass
class Edit:
    """One layer's intervention: λ, and the map indices to zero or mean-ablate."""

    lam: float | None = None
    zero: set[int] = field(default_factory=set)
    mean: set[int] = field(default_factory=set)

    def apply(self, y: torch.Tensor, attn) -> torch.Tensor:  # y (B, maps, T, Dv)
        if not (self.zero or self.mean):
            return y
        keep = torch.ones(y.size(1), device=y.device, dtype=y.dtype)
        keep[sorted(self.zero | self.mean)] = 0.0
        out = y * keep.view(1, -1, 1, 1)
        if self.mean:
            idx = sorted(self.mean)
            out[:, idx] = y[:, idx].mean(dim=(0, 2), keepdim=True).expand(y.size(0), -1, y.size(2), -1)
        return out


@contextlib.contextmanager
def intervene(model, lam: float | None = None, zero_streams: Iterable[str] = (),
              zero_heads: Iterable[tuple[int, str, int]] = (), mean_heads: Iterable[tuple[int, str, int]] = (),
              layers: Iterable[int] | None = None) -> Iterator[None]:
    """Within the block, ``model`` (a ``PrismLM``) runs with λ = ``lam`` and the named streams and heads
    silenced; ``layers`` limits ``lam`` and ``zero_streams`` to those layers (default: all)."""
    blocks = list(model.blocks)
    chosen = set(range(len(blocks))) if layers is None else set(layers)
    bad = sorted(chosen - set(range(len(blocks))))
    if bad:
        raise PrismError(f"layer {bad[0]} is not a layer of this model (0..{len(blocks) - 1})")
    edits = {i: Edit() for i in range(len(blocks))}
    if lam is not None:
        with_lambda = [i for i in sorted(chosen) if blocks[i].attn.own_lambda() is not None]
        if not with_lambda:
            raise PrismError(f"{model.config.attention} attention has no λ to set")
        for i in with_lambda:
            edits[i].lam = float(lam)
    for stream in zero_streams:
        for i in sorted(chosen):
            attn = blocks[i].attn
            edits[i].zero |= {attn.map_index(_stream_index(attn, stream, i), h) for h in range(attn.n_head)}
    for layer, index in _map_indices(blocks, zero_heads):
        edits[layer].zero.add(index)
    for layer, index in _map_indices(blocks, mean_heads):
        edits[layer].mean.add(index)
    active = {i: e for i, e in edits.items() if e.lam is not None or e.zero or e.mean}
    previous = {i: blocks[i].attn.edit for i in active}
    try:
        for i, e in active.items():
            outer = previous[i]
            if outer is not None:  # nested: compose with the enclosing block's edit
                e = Edit(e.lam if e.lam is not None else outer.lam, outer.zero | e.zero, outer.mean | e.mean)
            blocks[i].attn.edit = e
        yield
    finally:
        for i, e in previous.items():
            blocks[i].attn.edit = e


def _map_indices(blocks, heads: Iterable[tuple[int, str, int]]) -> list[tuple[int, int]]:
    """(layer, map index) of each (layer, stream, head)."""
    out = []
    for layer, stream, head in heads:
        attn = _layer(blocks, layer).attn
        if not 0 <= head < attn.n_head:
            raise PrismError(f"head {head} is not a head of layer {layer} (0..{attn.n_head - 1} per stream)")
        out.append((layer, attn.map_index(_stream_index(attn, stream, layer), head)))
    return out


def _layer(blocks, layer: int):
    if not 0 <= layer < len(blocks):
        raise PrismError(f"layer {layer} is not a layer of this model (0..{len(blocks) - 1})")
    return blocks[layer]


def _stream_index(attn, stream: str, layer: int) -> int:
    if stream not in attn.stream_names:
        raise PrismError(f"layer {layer} has no stream {stream!r} (its streams: {', '.join(attn.stream_names)})")
    return attn.stream_names.index(stream)
