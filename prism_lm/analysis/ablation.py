"""The functional test of roles: what a model gets wrong when an intervention silences a part of it.

For each intervention (``model.interventions.intervene`` keyword arguments, by name) the per-token
loss over the same windows is compared with the unmodified model's: the mean change on recall
tokens (embedded-corpus annotations whose antecedent lies inside the window), by dependency kind,
and on every other token. A stream whose removal hurts recall more than the rest is doing the
recalling; one whose removal changes nothing is not needed for it.
"""

from __future__ import annotations

import numpy as np
import torch

from prism_lm.data.shards import ShardSet
from prism_lm.model import PrismLM
from prism_lm.model.interventions import intervene


def default_interventions(model: PrismLM) -> dict[str, dict]:
    """Silence each stream of the model's kind in every layer (PRISM: signal, noise; DIFF: positive,
    negative; one-stream kinds: all heads of the first and of the last layer)."""
    streams = model.blocks[0].attn.stream_names
    if len(streams) > 1:
        return {f"{s} stream off": {"zero_streams": [s]} for s in streams}
    last = len(model.blocks) - 1
    return {f"layer {i} heads off": {"zero_streams": list(streams), "layers": [i]} for i in dict.fromkeys((0, last))}


@torch.no_grad()
def _token_losses(model: PrismLM, rows: torch.Tensor, edit: dict | None) -> torch.Tensor:
    device = next(model.parameters()).device
    x, y = rows[:, :-1].to(device), rows[:, 1:].to(device)
    if edit is None:
        return model(x, y, reduction="none").loss.cpu()
    with intervene(model, **edit):
        return model(x, y, reduction="none").loss.cpu()


def _recall_mask(shards: ShardSet, ids: list[int], T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) bool: the target positions that predict a recall token whose antecedent is in the
    window; (B, T) int: its kind id (-1 elsewhere)."""
    notes = shards.annotations()
    mask = torch.zeros(len(ids), T, dtype=torch.bool)
    kind = torch.full((len(ids), T), -1, dtype=torch.long)
    for row, w in enumerate(ids):
        start = w * T
        for r, _antecedent, k in notes[(notes[:, 0] > start) & (notes[:, 0] <= start + T) & (notes[:, 1] >= start)]:
            mask[row, r - start - 1] = True
            kind[row, r - start - 1] = int(k)
    return mask, kind


def intervention_effects(model: PrismLM, shards: ShardSet, interventions: dict[str, dict] | None = None,
                         max_windows: int = 32, batch_size: int = 8) -> dict:
    """Per intervention: the mean loss change (intervened − unmodified) on recall tokens, by kind, and
    on the other tokens, over the same ``max_windows`` windows of the model's block size."""
    model.eval()
    T = model.config.block_size
    interventions = default_interventions(model) if interventions is None else interventions
    n = min(max_windows, (len(shards) - 1) // T)
    kinds = shards.manifest.get("annotation_kinds", [])
    base, edited, masks, kind_ids = [], {name: [] for name in interventions}, [], []
    for first in range(0, n, batch_size):
        ids = list(range(first, min(first + batch_size, n)))
        rows = torch.from_numpy(shards.windows([w * T for w in ids], T + 1))
        base.append(_token_losses(model, rows, None))
        for name, edit in interventions.items():
            edited[name].append(_token_losses(model, rows, edit))
        mask, kind = _recall_mask(shards, ids, T)
        masks.append(mask)
        kind_ids.append(kind)
    base_nll, mask, kind = torch.cat(base), torch.cat(masks), torch.cat(kind_ids)
    out = {"windows": n, "tokens": int(mask.numel()), "recall_tokens": int(mask.sum()),
           "base": {"recall": _mean(base_nll[mask]), "other": _mean(base_nll[~mask])}, "effects": {}}
    for name, parts in edited.items():
        delta = torch.cat(parts) - base_nll
        out["effects"][name] = {
            "edit": interventions[name], "all_delta": _mean(delta.flatten()), "recall_delta": _mean(delta[mask]),
            "other_delta": _mean(delta[~mask]),
            "by_kind": {k: _mean(delta[kind == i]) for i, k in enumerate(kinds) if bool((kind == i).any())}}
    return out


def head_ablation_spread(model: PrismLM, shards: ShardSet, max_windows: int = 16) -> dict[str, dict[str, float]]:
    """Per stream: the mean and the standard deviation over heads (every layer) of the loss change on
    all tokens when that one head is zeroed. A stream whose heads play different roles has a wide
    spread; interchangeable heads, a narrow one."""
    attn = model.blocks[0].attn
    heads = {(layer, s, h): {"zero_heads": [(layer, s, h)]} for layer in range(len(model.blocks))
             for s in attn.stream_names for h in range(attn.n_head)}
    effects = intervention_effects(model, shards, {f"{k}": edit for k, edit in heads.items()}, max_windows)["effects"]
    out = {}
    for s in attn.stream_names:
        deltas = np.array([effects[f"{k}"]["all_delta"] for k in heads if k[1] == s])
        out[s] = {"mean": float(deltas.mean()), "spread": float(deltas.std(ddof=1)) if len(deltas) > 1 else 0.0}
    return out


def _mean(x: torch.Tensor) -> float | None:
    return float(np.mean(x.numpy())) if x.numel() else None
