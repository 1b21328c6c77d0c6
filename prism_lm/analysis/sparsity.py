"""The sparsity of the ISTA blocks' codes: what CRATE's sparse-coding step is for.

An ISTA block (``mlp = "ista"``) outputs ReLU(z + η(Dᵀz − DᵀDz) − ηλ), a nonnegative code; its
sparsity is the fraction of exact zeros in it, per layer, over every token of ``windows`` windows
of a split (the first ones, as the head statistics take them). Read at the block's ``hook_code``
site with a forward hook, in eval mode. A model without ISTA blocks has no entry (None), never a 0
that would read as "dense".
"""

from __future__ import annotations

import numpy as np
import torch

from prism_lm.data.shards import ShardSet
from prism_lm.model import PrismLM
from prism_lm.model.mlp import IstaMLP


@torch.no_grad()
def ista_sparsity(model: PrismLM, shards: ShardSet, windows: int = 16, batch_size: int = 8) -> dict | None:
    """{"per_layer": [fraction of zeros], "mean": ..., "tokens": N} for the ISTA layers, or None."""
    layers = [i for i, block in enumerate(model.blocks) if isinstance(block.mlp, IstaMLP)]
    if not layers:
        return None
    T = model.config.block_size
    n = max(1, min(windows, (len(shards) - 1) // T))
    zeros, counts = np.zeros(len(model.blocks)), np.zeros(len(model.blocks))

    def count(i):
        def hook(module, args, output):
            zeros[i] += float((output == 0).sum())
            counts[i] += output.numel()
        return hook

    handles = [model.blocks[i].mlp.hook_code.register_forward_hook(count(i)) for i in layers]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for first in range(0, n, batch_size):
            starts = [w * T for w in range(first, min(n, first + batch_size))]
            idx = torch.as_tensor(shards.windows(starts, T).astype(np.int64), device=device)
            model.hidden_states(idx)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    per_layer = [float(zeros[i] / counts[i]) for i in layers]
    return {"layers": layers, "per_layer": per_layer, "mean": float(np.mean(per_layer)), "tokens": n * T,
            "what": "fraction of exact zeros in each ISTA block's code (its ReLU output), over every token "
                    "and channel of the first windows of the split"}
