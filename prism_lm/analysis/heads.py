"""Head statistics over many windows, signal-versus-noise comparisons, and antecedent hit rates.

For every layer, head and stream, over non-overlapping windows of a split (query i, key j <= i,
lag = i - j, A the attention probabilities):
- ``mean_distance``: Σ_j A_ij (i - j), averaged over queries;
- ``median_lag``: the lag by which a query has spent half its mass, averaged over queries (a spike at
  lag 60 scores 60 here and 0.25 in ``profile_sharpness``);
- ``entropy``: -Σ_j A_ij log A_ij (nats), averaged over queries;
- ``mass_within_8`` / ``mass_beyond_64``: Σ of A_ij with lag <= 8 / lag > 64, averaged over queries;
- ``mass_beyond_far``: mass at lags beyond the 90th-percentile distance of the data's dependencies
  that fit in a window (annotated corpora only: how much a head reaches as far as the long
  dependencies it could see do);
- ``mass_self`` / ``mass_lags_1_8`` / ``mass_beyond_8``: the mass on the query's own token (lag 0),
  on lags 1–8 and beyond, averaged over queries; they sum to 1, so a head that looks "local" only
  because it attends to itself (with Q = K a larger ‖U z‖ raises the self-score) is told apart;
- ``entropy_relative``: the entropy over each query's visible keys divided by the uniform's
  log(i + 1) (queries 1.., query 0 has one key): 1 for a uniform head, 0 for a one-key head;
- ``sink_first`` / ``sink_first4``: the mass on the window's first position / first four (queries
  past them), the attention-sink measure;
- ``selectivity`` (annotated corpora): the antecedent hit rate minus its lag-matched null;
- ``profile_sharpness`` (called spectral centroid before): the attention-versus-lag profile is Fourier
  transformed and Σ f |P(f)| / Σ |P(f)| taken, in cycles per token. It measures how sharp a profile
  is, not where it sits: a spike at lag 0, 2 or 60 scores the same. Use the two above for locality.
Streams are compared by the difference of their per-head means. The interval is a percentile
bootstrap over the heads of this one model, resampled within each layer (stratified, so layer
effects do not leak in; ``stats.bootstrap_diff``); ``stats.hierarchical_bootstrap_diff`` combines
several runs (seeds, then heads within layers) for experiments across seeds.

On the embedded corpus, every recall token r with antecedent a inside the same window gives the
attention mass that query r - 1 (the position that predicts token r) puts on key a: the
**antecedent hit rate** of a head is its mean over recall tokens. Two nulls sit beside it: the
uniform head's rate (1 / the number of visible keys) and the **lag-matched null**, the head's own
mean attention at that recall's lag, so a head that simply attends at that distance does not look
as if it found the antecedent. The **answer accuracy** is the fraction of recall tokens that are the
model's top prediction (Zoology's MQAR accuracy). The per-token loss is split into recall tokens and all other tokens,
and recall tokens again by dependency kind (object, name, pet, cause) and by distance bucket, with
each stream's hit rate and lag-matched null per kind: only some kinds are predictable from context,
and the mean over all of them hides which.

The **logit-lag correlation** is the empirical counterpart of the RoPE cross-kernel: each head's
pre-softmax logit as a function of lag (log-probabilities centred over each query's visible keys,
which removes the softmax's per-query constant), averaged over queries, and for two-stream kinds
the correlation between signal head h's and noise head h's profiles.

**Head diversity** (how different the heads of one stream are): each head's attention mass is summed
by the word class of the key (names, nouns, determiners, verbs, pronouns, punctuation, other; the
classes of the embedded generator, ``data.embedded.word_class``) and normalised to a distribution;
the diversity of a stream in a layer is the mean pairwise Jensen–Shannon distance (base 2, so in
[0, 1]) between its heads' distributions, and a stream's value is the mean over layers.

**Role diversity** (whether a stream's heads divide the dependency kinds among themselves; with
annotations of two kinds or more): each head's selectivity per kind (its hit rate on that kind's
antecedents minus its lag-matched null), negative parts set to 0, is the head's role vector; the
stream's role diversity is 1 − the cosine similarity of its heads' role vectors, averaged over head
pairs weighted by the product of their norms (``role_diversity``: 1 when every head serves its own
kind, 0 when all serve the same mix; a head selective for nothing weighs nothing, so noise cannot pass
for roles). Role strength, the mean norm, says whether there are roles at all.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from prism_lm.analysis.capture import capture_attention, hook_name
from prism_lm.analysis.measures import PATTERN_MEASURES, STREAM_DIFF_COLUMNS, synthetic_head
from prism_lm.data.embedded import WORD_CLASSES, word_class
from prism_lm.data.loader import window_starts
from prism_lm.data.shards import ShardSet
from prism_lm.model import PrismLM
from prism_lm.model.loss import lm_cross_entropy
from prism_lm.stats import bootstrap_diff

CLASSES = (*WORD_CLASSES, "other")
DISTANCE_BUCKETS = ((1, 16), (17, 64), (65, None))  # recall-to-antecedent distance in tokens, inclusive
METRICS = PATTERN_MEASURES  # every per-head measure of the attention pattern alone (analysis/measures.py)


def sink_masses(A: torch.Tensor) -> dict[str, torch.Tensor]:
    """A (B, heads, T, T) -> per head (heads,): the mean attention on the window's first position
    (queries after it) and on its first four (queries after them); the latter relative to a uniform
    head's at this window (``sink_first4_rel``: 1 is no sink) and as a share of the mass off the own
    token (``sink_first4_nonself``)."""
    ones = torch.ones(A.shape[1], dtype=A.dtype)
    T = A.shape[-1]
    if T <= 4:
        return {"sink_first": A[..., 1:, 0].mean(dim=(0, 2)) if T > 1 else ones, "sink_first4": ones,
                "sink_first4_rel": ones, "sink_first4_nonself": ones}
    first4 = A[..., 4:, :4].sum(-1)  # (B, heads, T - 4)
    uniform = float((4.0 / torch.arange(5, T + 1, dtype=torch.float64)).mean())
    off_self = (1.0 - torch.diagonal(A, dim1=-2, dim2=-1)[..., 4:]).clamp_min(1e-12)
    return {"sink_first": A[..., 1:, 0].mean(dim=(0, 2)), "sink_first4": first4.mean(dim=(0, 2)),
            "sink_first4_rel": first4.mean(dim=(0, 2)) / uniform,
            "sink_first4_nonself": (first4 / off_self).clamp(max=1.0).mean(dim=(0, 2))}


def pattern_metrics(A: torch.Tensor, far: int | None = None) -> dict[str, torch.Tensor]:
    """A (B, heads, T, T) causal probabilities -> per-head metrics (heads,) and the lag profile (heads, T).

    ``far``: a lag; ``mass_beyond_far`` is then the mass at lags beyond it.
    """
    B, NH, T, _ = A.shape
    i = torch.arange(T)[:, None]
    lag = (i - torch.arange(T)[None, :]).clamp(min=0).float()  # (T, T), 0 above the diagonal (A is 0 there)
    mean_distance = (A * lag).sum(-1).mean(dim=(0, 2))
    # mass at keys j' >= j, i.e. at lags <= i - j; the median key is the last j where it still reaches 1/2
    suffix = A.flip(-1).cumsum(-1).flip(-1)
    median_key = (suffix >= 0.5 - 1e-6).sum(-1) - 1  # (B, heads, T)
    median_lag = (torch.arange(T) - median_key).clamp(min=0).float().mean(dim=(0, 2))
    entropy = -(A * torch.log(A.clamp_min(1e-12))).sum(-1).mean(dim=(0, 2))
    within = (A * (lag <= 8)).sum(-1).mean(dim=(0, 2))
    beyond = (A * (lag > 64)).sum(-1).mean(dim=(0, 2))
    # profile[h, l] = mean over windows and queries i >= l of A[i, i - l]
    profile = torch.stack([torch.diagonal(A, offset=-l, dim1=-2, dim2=-1).mean(dim=(0, 2)) for l in range(T)], -1)
    # pre-softmax logits up to each query's constant: log-probabilities centred over the visible keys
    visible = lag.new_ones(T, T).tril().bool()
    logp = torch.log(A.clamp_min(1e-30)).masked_fill(~visible, 0.0)
    centred = (logp - logp.sum(-1, keepdim=True) / visible.sum(-1, keepdim=True)).masked_fill(~visible, 0.0)
    logit_profile = torch.stack([torch.diagonal(centred, offset=-l, dim1=-2, dim2=-1).mean(dim=(0, 2))
                                 for l in range(T)], -1)
    # self (lag 0), local (lags 1-8) and beyond: three masses that sum to 1, so "local" is not self-attention
    self_mass = torch.diagonal(A, dim1=-2, dim2=-1).mean(dim=(0, 2))
    local = (A * ((lag >= 1) & (lag <= 8))).sum(-1).mean(dim=(0, 2))
    # entropy over each query's visible keys relative to the uniform's log(i + 1) (query 0 has one key)
    keys = torch.arange(1, T + 1, dtype=A.dtype)
    per_query = -(A * torch.log(A.clamp_min(1e-12))).sum(-1)[..., 1:] / torch.log(keys[1:])
    # far and focused: mass beyond lag 8 off the first four keys (a sink is not a far dependency) times the
    # query's focus (1 - relative entropy); 0 for a uniform head, a sink, or any head near its queries
    off_sink = torch.ones(T, T)
    off_sink[:, :4] = 0.0
    far_mass = (A * ((lag > 8) * off_sink)).sum(-1)[..., 1:]  # (B, heads, T - 1)
    out = {"mean_distance": mean_distance, "median_lag": median_lag, "entropy": entropy, "mass_within_8": within,
           "mass_beyond_64": beyond, "profile": profile, "logit_profile": logit_profile,
           "mass_self": self_mass, "mass_lags_1_8": local, "mass_beyond_8": 1.0 - self_mass - local,
           "entropy_relative": per_query.mean(dim=(0, 2)) if T > 1 else torch.ones(NH),
           "far_focus": (far_mass * (1.0 - per_query)).mean(dim=(0, 2)) if T > 1 else torch.zeros(NH),
           **sink_masses(A)}
    if far is not None:
        out["mass_beyond_far"] = (A * (lag > far)).sum(-1).mean(dim=(0, 2))
    return out


@functools.lru_cache(maxsize=64)
def uniform_values(T: int) -> dict[str, float]:
    """Every pattern measure of the uniform causal head over a T-token window (the registry's
    uniform value of each measure)."""
    m = pattern_metrics(synthetic_head("diffuse", T)[None, None])
    return {k: float(m[k][0]) for k in PATTERN_MEASURES if k in m}


def profile_sharpness(profile: np.ndarray) -> np.ndarray:
    """(heads, L) lag profiles -> (heads,) centroid frequency of |rfft| in cycles per token (sharpness only)."""
    mag = np.abs(np.fft.rfft(profile, axis=-1))
    freqs = np.fft.rfftfreq(profile.shape[-1])
    return (mag * freqs).sum(-1) / np.maximum(mag.sum(-1), 1e-12)


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between two distributions."""
    m = (p + q) / 2

    def kl(a, b):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))

    return float(np.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2)))


def stream_diversity(class_mass: np.ndarray) -> float:
    """Mean pairwise JS distance between the rows (heads) of ``class_mass`` (heads, classes)."""
    dist = class_mass / class_mass.sum(-1, keepdims=True)
    pairs = [js_distance(dist[a], dist[b]) for a in range(len(dist)) for b in range(a + 1, len(dist))]
    return float(np.mean(pairs)) if pairs else 0.0


def role_diversity(selectivity: np.ndarray) -> float | None:
    """(heads, kinds) selectivity -> 1 − the norm-weighted mean cosine similarity of the heads' positive
    parts, in [0, 1]; None with fewer than two kinds or two selective heads (see the module docstring)."""
    roles = np.clip(np.asarray(selectivity, dtype=float), 0.0, None)
    norms = np.linalg.norm(roles, axis=1)
    if roles.shape[1] < 2 or int((norms > 0).sum()) < 2:
        return None
    pairs = ~np.eye(len(roles), dtype=bool)
    return float(1.0 - (roles @ roles.T)[pairs].sum() / np.outer(norms, norms)[pairs].sum())


def role_strength(selectivity: np.ndarray) -> float:
    """The mean over heads of the norm of a head's positive per-kind selectivity."""
    return float(np.linalg.norm(np.clip(np.asarray(selectivity, dtype=float), 0.0, None), axis=1).mean())


def _roles(flat: list[dict], streams: list[str], kinds: list[str]) -> dict | None:
    """Per stream, the role diversity and strength of its heads (every layer) over the kinds every
    head was measured on; None with fewer than two such kinds."""
    measured = [k for k in kinds if flat and all(f"hit_rate_{k}" in e for e in flat)]
    if len(measured) < 2:
        return None
    out = {"kinds": measured, "diversity": {}, "strength": {},
           "what": "per head, selectivity per dependency kind (negative parts 0); diversity: 1 - the "
                   "norm-weighted mean cosine similarity between a stream's heads; strength: the mean norm"}
    for stream in streams:
        sel = np.array([[e[f"hit_rate_{k}"] - e[f"lag_null_{k}"] for k in measured]
                        for e in flat if e["stream"] == stream])
        out["diversity"][stream], out["strength"][stream] = role_diversity(sel), role_strength(sel)
    return out


def _class_table(shards: ShardSet) -> torch.Tensor:
    """(vocab,) the word-class index of every token id of the data's codec."""
    codec = shards.codec()
    return torch.tensor([CLASSES.index(word_class(codec.decode([i]))) for i in range(shards.vocab_size)])


def distance_bucket(distance: int) -> str:
    """The name of the DISTANCE_BUCKETS bucket holding ``distance`` ("1-16", "17-64", ">64")."""
    for lo, hi in DISTANCE_BUCKETS:
        if distance >= lo and (hi is None or distance <= hi):
            return f"{lo}-{hi}" if hi else f">{lo - 1}"
    return "0"


@torch.no_grad()
def head_statistics(model: PrismLM, shards: ShardSet, max_windows: int | None = 64, batch_size: int = 8,
                    bos: bool = False) -> dict:
    """Per layer/head/stream metrics, stream comparisons, head diversity, and (with annotations)
    antecedent hit rates and recall losses by kind and distance, over ``window_starts``' windows."""
    T = model.config.block_size
    windows = window_starts(shards, T, max_windows, bos)
    acc = _HeadSums(shards, T, len(model.blocks))
    for first in range(0, len(windows), batch_size):
        acc.add(model, windows[first:first + batch_size])
    layers, logit_profiles, diversity = acc.per_layer(len(windows))
    flat = [e for layer in layers for e in layer]
    streams, heads = acc.streams, acc.heads
    names = list(streams[0]) if streams else []
    n = len(windows)
    result = {"windows": n, "tokens": n * T, "heads": flat, "streams": names, "comparison": _compare(flat, names),
              "far_lag": acc.far, "logit_lag": _logit_lag_correlation(logit_profiles, heads, streams),
              "diversity": {"classes": list(CLASSES), "per_layer": diversity,
                            "mean": {s: float(np.mean(v)) for s, v in diversity.items()},
                            "what": "mean pairwise Jensen-Shannon distance (base 2) between the heads of a stream "
                                    "in a layer, over their attention mass by key word class; mean over layers"}}
    if acc.recall_loss:
        result["recall_loss"] = {
            "recall_tokens": len(acc.recall_loss), "recall_mean": float(np.mean(acc.recall_loss)),
            "recall_accuracy": float(np.mean(acc.recall_correct)),
            "other_tokens": len(acc.other_loss), "other_mean": float(np.mean(acc.other_loss)),
            "by_kind": _recall_groups(acc.recall_loss, [acc.kinds[k] for k in acc.recall_kind], flat, names,
                                      acc.recall_correct),
            "by_distance": _recall_groups(acc.recall_loss, [distance_bucket(d) for d in acc.recall_dist])}
    roles = _roles(flat, names, list(acc.kinds))
    if roles:
        result["roles"] = roles
    if acc.uniform:
        result["uniform_hit_rate"] = float(np.mean(acc.uniform))  # what a head spreading mass evenly would score
    return result


class _HeadSums:
    """Running sums of ``head_statistics`` over batches of windows, and their per-layer summary."""

    def __init__(self, shards: ShardSet, T: int, n_layers: int):
        self.shards, self.T, self.L = shards, T, n_layers
        self.notes = shards.annotations()
        lags = self.notes[:, 0] - self.notes[:, 1]
        seen = lags[lags < T]  # dependencies a window can hold
        self.far = int(np.percentile(seen, 90)) if len(seen) else None
        self.kinds = shards.manifest.get("annotation_kinds", [])
        self.classes = _class_table(shards)
        self.sums: list[dict] = [dict() for _ in range(n_layers)]
        self.class_mass: list[torch.Tensor | None] = [None] * n_layers  # per layer: (heads, classes)
        self.hits = [[] for _ in range(n_layers)]  # per layer: (heads,) masses, lag and kind id, per recall token
        self.recall_loss, self.recall_kind, self.recall_dist, self.other_loss, self.uniform = [], [], [], [], []
        self.recall_correct: list[bool] = []
        self.streams = self.heads = None

    def add(self, model: PrismLM, starts: list[int]) -> None:
        T = self.T
        rows = torch.from_numpy(self.shards.windows(starts, T + 1))
        cache = capture_attention(model, rows[:, :-1])
        self.streams, self.heads = cache.streams, cache.heads_per_stream
        nll = lm_cross_entropy(cache.logits, rows[:, 1:], reduction="none")  # (B, T)
        correct = cache.logits.argmax(-1) == rows[:, 1:]  # (B, T): the answer is the top prediction
        pairs = self._recall_pairs(starts, nll, correct)
        onehot = F.one_hot(self.classes[rows[:, :-1]], len(CLASSES)).float()  # (B, T, classes) of each key
        for layer in range(self.L):
            A = cache[hook_name(layer)]
            for k, v in pattern_metrics(A, self.far).items():
                self.sums[layer][k] = self.sums[layer].get(k, 0) + v * len(starts)
            mass = torch.einsum("bhj,bjc->hc", A.sum(2), onehot)  # attention received, by key class
            self.class_mass[layer] = mass if self.class_mass[layer] is None else self.class_mass[layer] + mass
            for row, q, key, kind in pairs:
                self.hits[layer].append((A[row, :, q, key].numpy(), q - key, kind))

    def _recall_pairs(self, starts: list[int], nll: torch.Tensor,
                      correct: torch.Tensor) -> list[tuple[int, int, int, int]]:
        """(row, query, key, kind) for recall tokens whose antecedent is inside the window; records
        their losses, whether each was the top prediction, kinds, distances and the uniform head's
        rate, and the other tokens' losses."""
        T, notes = self.T, self.notes
        recall_mask = torch.zeros(len(starts), T, dtype=torch.bool)
        pairs = []
        for row, start in enumerate(starts):
            inside = notes[(notes[:, 0] > start) & (notes[:, 0] <= start + T) & (notes[:, 1] >= start)]
            for r, a, kind in inside:
                recall_mask[row, r - start - 1] = True  # target position r - start - 1 predicts token r
                pairs.append((row, r - start - 1, a - start, int(kind)))
                self.recall_loss.append(float(nll[row, r - start - 1]))
                self.recall_correct.append(bool(correct[row, r - start - 1]))
                self.recall_kind.append(int(kind))
                self.recall_dist.append(int(r - a))
                self.uniform.append(1.0 / (r - start))
        self.other_loss.extend(nll[~recall_mask].tolist())
        return pairs

    def per_layer(self, n: int) -> tuple[list[list[dict]], list[np.ndarray], dict[str, list[float]]]:
        """Per layer: the head entries, the logit-lag profiles, and each stream's diversity."""
        layers, logit_profiles = [], []
        diversity: dict[str, list[float]] = {}
        for layer in range(self.L):
            m = {k: (v / n).numpy() for k, v in self.sums[layer].items()}
            profile = m.pop("profile")
            logit_profiles.append(m.pop("logit_profile"))
            m["profile_sharpness"] = profile_sharpness(profile)
            H = self.heads[layer]
            labels = [s for s in self.streams[layer] for _ in range(H)]
            layers.append([self._entry(layer, h, stream, m, profile) for h, stream in enumerate(labels)])
            mass = self.class_mass[layer].numpy() + 1e-12
            for s_i, stream in enumerate(self.streams[layer]):
                diversity.setdefault(stream, []).append(stream_diversity(mass[s_i * H:(s_i + 1) * H]))
        return layers, logit_profiles, diversity

    def _entry(self, layer: int, h: int, stream: str, m: dict, profile: np.ndarray) -> dict:
        hits = self.hits[layer]
        entry = {"layer": layer, "head": h % self.heads[layer], "stream": stream,
                 **{k: float(m[k][h]) for k in (*METRICS, "mass_beyond_far") if k in m}}
        if hits:
            entry["antecedent_hit_rate"] = float(np.mean([x[h] for x, _, _ in hits]))
            entry["antecedent_lag_null"] = float(np.mean([profile[h, lag] for _, lag, _ in hits]))
            entry["selectivity"] = entry["antecedent_hit_rate"] - entry["antecedent_lag_null"]
            for k, kind in enumerate(self.kinds):
                mine = [(x[h], profile[h, lag]) for x, lag, kk in hits if kk == k]
                if mine:
                    entry[f"hit_rate_{kind}"] = float(np.mean([x for x, _ in mine]))
                    entry[f"lag_null_{kind}"] = float(np.mean([p for _, p in mine]))
        return entry


def _logit_lag_correlation(profiles: list[np.ndarray], heads, streams) -> dict | None:
    """The empirical cross-kernel: per layer, the Pearson correlation over lags 1..T/2 between
    signal head h's and noise head h's mean logit-versus-lag profile (two-stream kinds only)."""
    if not profiles or len(streams[0]) != 2:
        return None
    def correlations(last_lag: int) -> list[list[float]]:
        return [[float(np.corrcoef(prof[h, 1:last_lag + 1], prof[heads[layer] + h, 1:last_lag + 1])[0, 1])
                 for h in range(heads[layer])] for layer, prof in enumerate(profiles)]

    T = profiles[0].shape[1]
    per_layer = correlations(T // 2)
    by_window = {}
    for w in [2 ** k for k in range(3, T.bit_length()) if 2 ** k < T] + [T - 1]:
        with np.errstate(invalid="ignore", divide="ignore"):
            by_window[str(w)] = float(np.nanmean([c for row in correlations(w) for c in row]))
    return {"per_layer": per_layer, "mean": float(np.nanmean([c for row in per_layer for c in row])),
            "mean_abs": float(np.nanmean([abs(c) for row in per_layer for c in row])),
            "by_window": by_window,
            "profiles": [p.tolist() for p in profiles], "streams": list(streams[0]),
            "what": "Pearson correlation over lags 1..T/2 of signal head h's and noise head h's mean pre-softmax "
                    "logit (log-probability centred over the visible keys) as a function of lag; by_window: "
                    "the mean over heads and layers over lags 1..W, for W up to the window length"}


def _recall_groups(losses: list[float], groups: list[str], flat: list[dict] | None = None,
                   streams: list[str] = (), correct: list[bool] | None = None) -> dict:
    """Recall-token loss per group (and answer accuracy, given ``correct``); with head entries, each
    stream's mean hit rate and lag null per kind."""
    out = {}
    for g in dict.fromkeys(groups):
        at = [i for i, gg in enumerate(groups) if gg == g]  # this group's recall tokens
        out[g] = {"tokens": len(at), "loss": float(np.mean([losses[i] for i in at]))}
        if correct is not None:  # per kind: a task mixed with another is judged on its own answers
            out[g]["accuracy"] = float(np.mean([correct[i] for i in at]))
        for stream in streams if flat else ():
            mine = [e for e in flat if e["stream"] == stream and f"hit_rate_{g}" in e]
            if mine:
                out[g][f"hit_rate_{stream}"] = float(np.mean([e[f"hit_rate_{g}"] for e in mine]))
                out[g][f"lag_null_{stream}"] = float(np.mean([e[f"lag_null_{g}"] for e in mine]))
    return out


def _compare(flat: list[dict], streams: list[str]) -> dict:
    """First stream minus second (PRISM: signal - noise; DIFF: positive - negative), per metric, with a
    bootstrap over this model's heads, stratified by layer."""
    if len(streams) < 2:
        return {}
    a_name, b_name = streams[0], streams[1]
    keys = [k for k in STREAM_DIFF_COLUMNS if k in flat[0]]
    out = {"a": a_name, "b": b_name, "interval": "95% percentile bootstrap over the heads of this one model, "
                                                 "resampled within each layer"}
    a_heads = [e for e in flat if e["stream"] == a_name]
    b_heads = [e for e in flat if e["stream"] == b_name]
    for k in keys:
        out[k] = bootstrap_diff([e[k] for e in a_heads], [e[k] for e in b_heads],
                                strata_a=[e["layer"] for e in a_heads], strata_b=[e["layer"] for e in b_heads])
    return out


@torch.no_grad()
def stream_sinks(model: PrismLM, rows: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per stream: sink_first and sink_first4 on windows ``rows`` (B, T), mean over layers and heads."""
    return cache_sinks(capture_attention(model, rows))


def cache_sinks(cache) -> dict[str, dict[str, float]]:
    """``stream_sinks`` of an attention capture already made."""
    sums: dict[str, dict[str, list[float]]] = {}
    for layer in range(len(cache.streams)):
        m = sink_masses(cache[hook_name(layer)])
        H = cache.heads_per_stream[layer]
        for s_i, stream in enumerate(cache.streams[layer]):
            for k, v in m.items():
                sums.setdefault(stream, {}).setdefault(k, []).append(float(v[s_i * H:(s_i + 1) * H].mean()))
    return {s: {k: float(np.mean(v)) for k, v in d.items()} for s, d in sums.items()}


@torch.no_grad()
def sink_by_window_start(model: PrismLM, shards: ShardSet, max_windows: int = 16, batch_size: int = 8) -> dict:
    """Sink mass per stream on windows that start at a document's first token, on windows that start
    in the middle of one (half a window in), and on windows that start at the ``<|endoftext|>``
    before a document (``bos``: the layout of ``data.sampler = "bos"``, every sequence opening on the
    same token), over up to ``max_windows`` of each. A head that sinks only where the first position is
    a document start reads the start token; one that sinks on both uses the first position as such
    (what a position code alone can produce)."""
    T = model.config.block_size
    span = min(len(shards), 64 * T * max(1, max_windows))
    tokens = shards.window(0, span)
    starts = np.flatnonzero(tokens[:-1] == shards.codec().eot) + 1
    doc = [int(s) for s in starts if s + T + 1 <= span][:max_windows]
    nxt = {int(a): int(b) for a, b in zip(starts[:-1], starts[1:], strict=True)}
    mid = [s + T // 2 for s in doc if nxt.get(s, span) > s + T // 2 + 1 and s + T // 2 + T + 1 <= span]
    bos = [s - 1 for s in doc]
    out: dict = {"windows": {"doc_start": len(doc), "mid_doc": len(mid), "bos": len(bos)}}
    for where, chosen in (("doc_start", doc), ("mid_doc", mid), ("bos", bos)):
        parts = [(len(chosen[i:i + batch_size]), stream_sinks(model, torch.from_numpy(
            shards.windows(chosen[i:i + batch_size], T)))) for i in range(0, len(chosen), batch_size)]
        out[where] = {s: {k: sum(n * p[s][k] for n, p in parts) / len(chosen) for k in parts[0][1][s]}
                      for s in parts[0][1]} if parts else {}
    return out
