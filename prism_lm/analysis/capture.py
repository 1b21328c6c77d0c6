"""Attention capture with TransformerLens-style names, through the model's eager path.

    from prism_lm.analysis import capture_attention
    cache = capture_attention(model, "The frog found a shiny key.")
    cache["blocks.0.attn.hook_pattern"]       # [batch, head, query, key]; cache.streams[0] names each head

Heads are stacked stream by stream (PRISM: signal heads 0..H-1, then noise heads), so
``cache.stream_of_head(layer)`` gives the label of every head index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prism_lm.data.tokenizer import Codec
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM


def hook_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


@dataclass
class AttentionCache:
    patterns: dict[str, torch.Tensor]  # name -> (B, heads, Tq, Tk), fp32, CPU
    streams: list[tuple[str, ...]]  # per layer: the stream names, in head-stacking order
    heads_per_stream: list[int]
    tokens: torch.Tensor  # (B, T)
    logits: torch.Tensor  # (B, T, V)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.patterns[name]

    def keys(self):
        return self.patterns.keys()

    def stream_of_head(self, layer: int) -> list[str]:
        return [s for s in self.streams[layer] for _ in range(self.heads_per_stream[layer])]

    def stream(self, layer: int, name: str) -> torch.Tensor:
        """(B, H, Tq, Tk) of one stream of one layer."""
        k = self.streams[layer].index(name)
        h = self.heads_per_stream[layer]
        return self.patterns[hook_name(layer)][:, k * h:(k + 1) * h]


@torch.no_grad()
def capture_attention(model: PrismLM, inputs: torch.Tensor | str, codec: Codec | None = None) -> AttentionCache:
    """Run ``inputs`` (ids (B, T) or text) and keep every layer's attention probabilities. Text is
    encoded with ``codec``, else the one the model was loaded with (``load_model`` records it),
    else GPT-2 BPE when the model's vocabulary holds it."""
    if isinstance(inputs, str):
        codec = codec or getattr(model, "codec", None)
        if codec is None:
            if model.config.vocab_size < Codec().vocab_size:
                raise PrismError(f"this model's vocabulary ({model.config.vocab_size} ids) is not GPT-2's and it "
                                 "carries no tokenizer: pass codec=load_codec(checkpoint), or token ids")
            codec = Codec()
        inputs = torch.tensor([codec.encode(inputs)])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, maps = model.forward_with_attention(inputs.to(device))
    model.train(was_training)
    attns = [b.attn for b in model.blocks]
    return AttentionCache(
        patterns={hook_name(i): m.float().cpu() for i, m in enumerate(maps)},
        streams=[tuple(a.stream_names) for a in attns],
        heads_per_stream=[a.n_head for a in attns],
        tokens=inputs.cpu(), logits=logits.float().cpu())
