"""Head statistics over many windows, signal-versus-noise comparisons, and antecedent hit rates.

For every layer, head and stream, over non-overlapping windows of a split (query i, key j <= i,
lag = i - j, A the attention probabilities):
- ``mean_distance``: Σ_j A_ij (i - j), averaged over queries;
- ``entropy``: -Σ_j A_ij log A_ij (nats), averaged over queries;
- ``mass_within_8`` / ``mass_beyond_64``: Σ of A_ij with lag <= 8 / lag > 64, averaged over queries;
- ``spectral_centroid``: the attention-versus-lag profile (mean mass at each lag over the queries
  where that lag exists) is Fourier transformed; the centroid Σ f |P(f)| / Σ |P(f)| in cycles per
  token is high for sharp, local profiles and low for smooth, long-range ones.
Streams are compared by the difference of their per-head means, with a percentile bootstrap over
heads (resampled with replacement within each stream).

On the embedded corpus, every recall token r with antecedent a inside the same window gives the
attention mass that query r - 1 (the position that predicts token r) puts on key a: the
**antecedent hit rate** of a head is its mean over recall tokens. The per-token loss is split
into recall tokens and all other tokens.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from prism_lm.analysis.capture import capture_attention, hook_name
from prism_lm.data.shards import ShardSet
from prism_lm.model import PrismLM

METRICS = ("mean_distance", "entropy", "mass_within_8", "mass_beyond_64", "spectral_centroid")


def pattern_metrics(A: torch.Tensor) -> dict[str, torch.Tensor]:
    """A (B, heads, T, T) causal probabilities -> per-head metrics (heads,) and the lag profile (heads, T)."""
    B, NH, T, _ = A.shape
    i = torch.arange(T)[:, None]
    lag = (i - torch.arange(T)[None, :]).clamp(min=0).float()  # (T, T), 0 above the diagonal (A is 0 there)
    mean_distance = (A * lag).sum(-1).mean(dim=(0, 2))
    entropy = -(A * torch.log(A.clamp_min(1e-12))).sum(-1).mean(dim=(0, 2))
    within = (A * (lag <= 8)).sum(-1).mean(dim=(0, 2))
    beyond = (A * (lag > 64)).sum(-1).mean(dim=(0, 2))
    # profile[h, l] = mean over windows and queries i >= l of A[i, i - l]
    profile = torch.stack([torch.diagonal(A, offset=-l, dim1=-2, dim2=-1).mean(dim=(0, 2)) for l in range(T)], -1)
    return {"mean_distance": mean_distance, "entropy": entropy, "mass_within_8": within,
            "mass_beyond_64": beyond, "profile": profile}


def spectral_centroid(profile: np.ndarray) -> np.ndarray:
    """(heads, L) lag profiles -> (heads,) centroid frequency of |rfft| in cycles per token."""
    mag = np.abs(np.fft.rfft(profile, axis=-1))
    freqs = np.fft.rfftfreq(profile.shape[-1])
    return (mag * freqs).sum(-1) / np.maximum(mag.sum(-1), 1e-12)


def bootstrap_diff(a: np.ndarray, b: np.ndarray, reps: int = 2000, seed: int = 0) -> dict:
    """Mean of a minus mean of b with a 95% percentile bootstrap interval (heads resampled)."""
    rng = np.random.default_rng(seed)
    diffs = np.array([rng.choice(a, len(a)).mean() - rng.choice(b, len(b)).mean() for _ in range(reps)])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": float(a.mean() - b.mean()), "ci95": [float(lo), float(hi)],
            "mean_a": float(a.mean()), "mean_b": float(b.mean())}


def _windows(shards: ShardSet, T: int, max_windows: int | None) -> list[int]:
    n = (len(shards) - 1) // T
    return list(range(n if max_windows is None else min(n, max_windows)))


@torch.no_grad()
def head_statistics(model: PrismLM, shards: ShardSet, max_windows: int | None = 64, batch_size: int = 8) -> dict:
    """Per layer/head/stream metrics, stream comparisons, and (with annotations) antecedent hit rates."""
    T = model.config.block_size
    windows = _windows(shards, T, max_windows)
    notes = shards.annotations()
    L = len(model.blocks)
    sums: list[dict] = [dict() for _ in range(L)]
    hits = [[] for _ in range(L)]  # per layer: list of (heads,) masses, one per recall token
    recall_loss, other_loss, uniform = [], [], []
    streams = heads = None
    for first in range(0, len(windows), batch_size):
        ids = windows[first:first + batch_size]
        rows = torch.from_numpy(shards.windows([w * T for w in ids], T + 1))
        cache = capture_attention(model, rows[:, :-1])
        streams, heads = cache.streams, cache.heads_per_stream
        nll = F.cross_entropy(cache.logits.reshape(-1, cache.logits.size(-1)), rows[:, 1:].reshape(-1),
                              reduction="none").view(len(ids), T)
        recall_mask = torch.zeros(len(ids), T, dtype=torch.bool)
        pairs = []  # (row, query, key) for recall tokens whose antecedent is inside the window
        for row, w in enumerate(ids):
            start = w * T
            inside = notes[(notes[:, 0] > start) & (notes[:, 0] <= start + T) & (notes[:, 1] >= start)]
            for r, a, _ in inside:
                recall_mask[row, r - start - 1] = True  # target position r - start - 1 predicts token r
                pairs.append((row, r - start - 1, a - start))
                uniform.append(1.0 / (r - start))
        recall_loss.extend(nll[recall_mask].tolist())
        other_loss.extend(nll[~recall_mask].tolist())
        for layer in range(L):
            A = cache[hook_name(layer)]
            for k, v in pattern_metrics(A).items():
                sums[layer][k] = sums[layer].get(k, 0) + v * len(ids)
            for row, q, key in pairs:
                hits[layer].append(A[row, :, q, key].numpy())
    n = len(windows)
    layers = []
    for layer in range(L):
        m = {k: (v / n).numpy() for k, v in sums[layer].items()}
        m["spectral_centroid"] = spectral_centroid(m.pop("profile"))
        per_head = []
        labels = [s for s in streams[layer] for _ in range(heads[layer])]
        for h, stream in enumerate(labels):
            entry = {"layer": layer, "head": h % heads[layer], "stream": stream,
                     **{k: float(m[k][h]) for k in METRICS}}
            if hits[layer]:
                entry["antecedent_hit_rate"] = float(np.mean([x[h] for x in hits[layer]]))
            per_head.append(entry)
        layers.append(per_head)
    flat = [e for layer in layers for e in layer]
    names = list(streams[0]) if streams else []
    result = {"windows": n, "tokens": n * T, "heads": flat, "streams": names, "comparison": _compare(flat, names)}
    if recall_loss:
        result["recall_loss"] = {"recall_tokens": len(recall_loss), "recall_mean": float(np.mean(recall_loss)),
                                 "other_tokens": len(other_loss), "other_mean": float(np.mean(other_loss))}
    if uniform:
        result["uniform_hit_rate"] = float(np.mean(uniform))  # what a head spreading mass evenly would score
    return result


def _compare(flat: list[dict], streams: list[str]) -> dict:
    """First stream minus second (PRISM: signal - noise; DIFF: positive - negative), per metric."""
    if len(streams) < 2:
        return {}
    a_name, b_name = streams[0], streams[1]
    keys = [k for k in (*METRICS, "antecedent_hit_rate") if k in flat[0]]
    out = {"a": a_name, "b": b_name}
    for k in keys:
        a = np.array([e[k] for e in flat if e["stream"] == a_name])
        b = np.array([e[k] for e in flat if e["stream"] == b_name])
        out[k] = bootstrap_diff(a, b)
    return out
