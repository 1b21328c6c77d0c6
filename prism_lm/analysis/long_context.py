"""Long contexts: what a model does past its training length (the paper's claim that π-RoPE keeps
noise from accumulating over long contexts).

Only models without a learned position embedding (``model.position_embedding = "none"``) can be
run past ``block_size``; their RoPE tables are extended (``PrismLM.extend_positions``). For a
context of k training lengths, the per-token loss is averaged per bucket of one training length
(positions [jT, (j+1)T)). Later positions see more context, so a model that generalises has a last
bucket no worse than its first; ``excess`` = last bucket − first bucket > 0 is degradation with
position. The sink mass (attention on the window's first position and first four) at that
context says whether heads fall back on the start as contexts grow.
"""

from __future__ import annotations

import numpy as np
import torch

from prism_lm.analysis.capture import capture_attention
from prism_lm.analysis.heads import cache_sinks
from prism_lm.data.loader import window_starts
from prism_lm.data.shards import ShardSet
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM


@torch.no_grad()
def position_losses(model: PrismLM, shards: ShardSet, multiple: int, max_windows: int = 16,
                    batch_size: int = 4) -> dict:
    """Loss per training-length bucket at a context of ``multiple`` × block_size, and the sink mass
    there, over up to ``max_windows`` windows."""
    T = model.config.block_size
    context = multiple * T
    model.extend_positions(context)
    starts = window_starts(shards, context, max_windows)  # spread over the split, as every evaluation reads
    n = len(starts)
    if n < 1:
        raise PrismError(f"{shards.split} split has {len(shards)} tokens, too few for one window of {context} "
                         f"({multiple} x block_size {T})")
    model.eval()
    sums, sinks = torch.zeros(multiple, dtype=torch.float64), {"sink_first": 0.0, "sink_first4": 0.0}
    for first in range(0, n, batch_size):
        ids = starts[first:first + batch_size]
        rows = torch.from_numpy(shards.windows(ids, context + 1))
        cache = capture_attention(model, rows[:, :-1])
        nll = torch.nn.functional.cross_entropy(cache.logits.float().flatten(0, 1), rows[:, 1:].flatten(),
                                                reduction="none").view(len(ids), context)
        sums += nll.double().view(len(ids), multiple, T).sum(dim=(0, 2))
        per_stream = cache_sinks(cache)  # every stream has the same number of heads: their mean is all heads'
        for k in sinks:
            sinks[k] += float(np.mean([v[k] for v in per_stream.values()])) * len(ids)
    buckets = (sums / (n * T)).tolist()
    return {"multiple": multiple, "context": context, "windows": n, "bucket_loss": buckets,
            "excess": buckets[-1] - buckets[0], **{k: v / n for k, v in sinks.items()}}
