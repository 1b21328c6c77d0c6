import numpy as np
import pytest
import torch

from prism_lm.analysis import capture_attention
from prism_lm.analysis.heads import head_statistics, pattern_metrics, profile_sharpness
from prism_lm.data.loader import window_starts
from prism_lm.data.prepare import prepare
from prism_lm.data.shards import ShardSet
from prism_lm.model import PrismLM
from prism_lm.stats import bootstrap_diff, hierarchical_bootstrap_diff
from tests.helpers import tiny_model_config


def test_metrics_of_known_patterns():
    T = 100
    identity = torch.eye(T)[None, None]
    m = pattern_metrics(identity)
    assert m["mean_distance"].item() == 0 and m["entropy"].item() == pytest.approx(0, abs=1e-6)
    assert m["mass_within_8"].item() == 1 and m["mass_beyond_64"].item() == 0
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    u = pattern_metrics(uniform[None, None])
    assert u["mean_distance"].item() == pytest.approx(np.mean([i / 2 for i in range(T)]), rel=1e-5)
    assert u["entropy"].item() == pytest.approx(np.mean([np.log(i + 1) for i in range(T)]), rel=1e-5)
    expected_beyond = np.mean([max(0, i - 64) / (i + 1) for i in range(T)])
    assert u["mass_beyond_64"].item() == pytest.approx(expected_beyond, rel=1e-5)
    previous = torch.diag(torch.ones(T - 1), -1)
    previous[0, 0] = 1
    assert pattern_metrics(previous[None, None])["profile"][0, 1].item() == pytest.approx(1.0)


def test_profile_sharpness_orders_sharp_above_smooth():
    sharp = np.zeros((1, 64))
    sharp[0, 0] = 1
    smooth = np.exp(-np.arange(64) / 20.0)[None]
    assert profile_sharpness(sharp)[0] == pytest.approx(np.fft.rfftfreq(64).mean())
    assert profile_sharpness(smooth)[0] < profile_sharpness(sharp)[0]


def _spike(T: int, lag: int) -> torch.Tensor:
    """Every query attends to the key ``lag`` positions back (or to key 0 when it has none that far)."""
    A = torch.zeros(T, T)
    for i in range(T):
        A[i, max(0, i - lag)] = 1
    return A


def test_locality_measures_on_patterns_whose_order_is_known():
    """A spike near, a spike far, uniform attention, and a bimodal head (half near, half far)."""
    T = 128
    near, far = _spike(T, 2), _spike(T, 60)
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    bimodal = 0.5 * _spike(T, 1) + 0.5 * _spike(T, 90)
    m = {name: pattern_metrics(A[None, None], far=50) for name, A in
         (("near", near), ("far", far), ("uniform", uniform), ("bimodal", bimodal))}

    def value(name, key):
        return m[name][key].item()

    assert value("near", "median_lag") < value("uniform", "median_lag") < value("far", "median_lag")
    assert value("near", "mean_distance") < value("far", "mean_distance")
    assert value("near", "mass_beyond_far") == 0 and value("far", "mass_beyond_far") > 0.5
    # queries 51..127 reach beyond lag 50 with their far half (those before 90 at key 0)
    assert value("bimodal", "mass_beyond_far") == pytest.approx(0.5 * (T - 51) / T, rel=1e-5)
    assert value("near", "mass_within_8") == 1 and value("far", "mass_within_8") < 0.1
    # what the renamed measure cannot see: where a spike sits
    sharp = [profile_sharpness(pattern_metrics(_spike(T, lag)[None, None])["profile"].numpy())[0] for lag in (0, 2, 60)]
    assert max(sharp) - min(sharp) < 0.05 * max(sharp)


def test_bootstrap_interval():
    rng = np.random.default_rng(0)
    same = bootstrap_diff(rng.normal(0, 1, 30), rng.normal(0, 1, 30))
    assert same["ci95"][0] < 0 < same["ci95"][1]
    apart = bootstrap_diff(rng.normal(5, 1, 30), rng.normal(0, 1, 30))
    assert apart["ci95"][0] > 3 and apart["diff"] == pytest.approx(apart["mean_a"] - apart["mean_b"])


def test_stratified_bootstrap_keeps_layer_effects_out_of_the_interval():
    """Two layers far apart, the streams equal within each: stratified resampling gives a narrow interval,
    pooled resampling a wide one (draws that over-represent one layer)."""
    layers = np.repeat([0, 1], 8)
    a = np.where(layers == 0, 0.0, 100.0) + np.tile(np.linspace(-1, 1, 8), 2)
    b = a + 0.5
    pooled = bootstrap_diff(a, b)
    stratified = bootstrap_diff(a, b, strata_a=layers, strata_b=layers)
    width = lambda r: r["ci95"][1] - r["ci95"][0]  # noqa: E731
    assert width(stratified) < 0.1 * width(pooled)
    assert stratified["ci95"][0] < -0.5 < stratified["ci95"][1]


def test_hierarchical_bootstrap_over_seeds():
    def run(shift, seed):
        rng = np.random.default_rng(seed)
        return [{"layer": layer, "stream": stream, "m": rng.normal(shift if stream == "signal" else 0, 1)}
                for layer in range(2) for stream in ("signal", "noise") for _ in range(4)]

    apart = hierarchical_bootstrap_diff([run(5, s) for s in range(4)], "m", "signal", "noise")
    assert apart["runs"] == 4 and apart["ci95"][0] > 3
    same = hierarchical_bootstrap_diff([run(0, s) for s in range(4)], "m", "signal", "noise")
    assert same["ci95"][0] < 0 < same["ci95"][1]
    # one run: the interval covers heads only, and is no narrower than seeds plus heads
    assert hierarchical_bootstrap_diff([run(5, 0)], "m", "signal", "noise")["runs"] == 1


def test_head_statistics_and_antecedent_hits_agree_with_direct_capture(tmp_path):
    prepare(["embedded:40"], tmp_path / "d", val_fraction=0.0, compact_vocab=True, progress=False)
    shards = ShardSet(tmp_path / "d", "train")
    T = 128  # long enough that the windows hold recalls together with their antecedents
    model = PrismLM(tiny_model_config(vocab_size=shards.vocab_size, block_size=T)).eval()
    stats = head_statistics(model, shards, max_windows=3, batch_size=2)
    assert stats["windows"] == 3 and len(stats["heads"]) == 2 * 4
    assert {e["stream"] for e in stats["heads"]} == {"signal", "noise"}
    assert set(stats["comparison"]) >= {"a", "b", "mean_distance", "antecedent_hit_rate"}
    # recompute layer 1 hit rates by hand from the captured maps
    notes = shards.annotations()
    masses, hits = [], []
    for start in window_starts(shards, T, 3):  # spread over the split
        window = torch.from_numpy(shards.window(start, T + 1))[None]
        A = capture_attention(model, window[:, :-1])["blocks.1.attn.hook_pattern"]
        top = model(window[:, :-1]).logits.argmax(-1)[0]
        for r, a, _ in notes:
            if start < r <= start + T and a >= start:
                masses.append(A[0, :, r - start - 1, a - start].numpy())
                hits.append(bool(top[r - start - 1] == window[0, r - start]))
    assert masses, "the windows must hold annotated recalls"
    got = [e["antecedent_hit_rate"] for e in stats["heads"] if e["layer"] == 1]
    np.testing.assert_allclose(got, np.mean(masses, axis=0), rtol=1e-5)
    assert stats["recall_loss"]["recall_tokens"] == len(masses)
    assert stats["recall_loss"]["recall_accuracy"] == pytest.approx(np.mean(hits))  # answer accuracy (Zoology)
    nulls = [e["antecedent_lag_null"] for e in stats["heads"]]
    assert all(0 <= x <= 1 for x in nulls) and 0 < stats["far_lag"] < T  # a lag a window can hold
    for e in stats["heads"]:  # selectivity: what a head finds beyond attending at that distance
        assert e["selectivity"] == pytest.approx(e["antecedent_hit_rate"] - e["antecedent_lag_null"])
    assert stats["recall_loss"]["recall_tokens"] + stats["recall_loss"]["other_tokens"] == 3 * T


def test_word_classes_of_the_embedded_generator():
    from prism_lm.data.embedded import word_class

    assert word_class(" Lily") == "name" and word_class(" key") == "noun" and word_class(" the") == "determiner"
    assert word_class(" The") == "determiner" and word_class(" found") == "verb" and word_class(".") == "punctuation"
    assert word_class(" she") == "pronoun" and word_class(" zebra") == "other" and word_class(" lily") == "other"


def test_js_distance_is_zero_for_equal_one_for_disjoint_and_symmetric():
    from prism_lm.analysis.heads import js_distance, stream_diversity

    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.0, 1.0])
    assert js_distance(p, p) == pytest.approx(0.0, abs=1e-9)
    assert js_distance(p, q) == pytest.approx(1.0)
    r = np.array([0.2, 0.3, 0.5])
    assert js_distance(p, r) == pytest.approx(js_distance(r, p))
    same = np.array([[1.0, 2.0, 3.0]] * 4)
    specialised = np.eye(4)[:, :3] + 1e-12
    assert stream_diversity(same) == pytest.approx(0.0, abs=1e-6)
    assert stream_diversity(specialised) > 0.8 > stream_diversity(same)


def test_head_diversity_and_recall_by_kind_on_the_embedded_corpus(tmp_path):
    from prism_lm.analysis.heads import head_statistics
    from prism_lm.data.prepare import prepare
    from prism_lm.data.shards import ShardSet

    prepare(["embedded:200"], tmp_path, val_fraction=0.2, compact_vocab=True, progress=False)
    shards = ShardSet(tmp_path, "val")
    model = PrismLM(tiny_model_config(vocab_size=shards.vocab_size, block_size=128)).eval()
    stats = head_statistics(model, shards, max_windows=8)
    div = stats["diversity"]
    assert set(div["mean"]) == {"signal", "noise"} and len(div["per_layer"]["signal"]) == 2
    assert all(0 <= v <= 1 for v in div["mean"].values())
    recall = stats["recall_loss"]
    kinds = recall["by_kind"]
    assert set(kinds) <= {"object", "name", "pet", "cause"} and kinds
    assert sum(k["tokens"] for k in kinds.values()) == recall["recall_tokens"]
    assert sum(b["tokens"] for b in recall["by_distance"].values()) == recall["recall_tokens"]
    some = next(iter(kinds.values()))
    assert {"hit_rate_signal", "lag_null_signal", "hit_rate_noise", "lag_null_noise", "loss"} <= set(some)
    # the mean recall loss is the token-weighted mean of the per-kind losses
    weighted = sum(k["loss"] * k["tokens"] for k in kinds.values()) / recall["recall_tokens"]
    assert weighted == pytest.approx(recall["recall_mean"])
    roles = stats["roles"]  # every kind present in these windows: each stream's role diversity from its heads
    assert len(roles["kinds"]) >= 2 and set(roles["diversity"]) == {"signal", "noise"}
    from prism_lm.analysis.heads import role_diversity, role_strength

    signal = np.array([[e[f"hit_rate_{k}"] - e[f"lag_null_{k}"] for k in roles["kinds"]]
                       for e in stats["heads"] if e["stream"] == "signal"])
    assert roles["diversity"]["signal"] == role_diversity(signal)
    assert roles["strength"]["signal"] == pytest.approx(role_strength(signal))


def test_role_diversity_tells_divided_roles_from_shared_ones_and_from_noise():
    """Known answers: each head on its own kind 1; all heads on the same mix 0; two strong heads
    sharing a role beside a faint head elsewhere stay near 0 (an unweighted mean of 1 - cosine would say
    0.67); negative selectivity is no role; fewer than two selective heads or kinds: no value."""
    from prism_lm.analysis.heads import role_diversity, role_strength

    assert role_diversity(np.eye(4) * 0.2) == pytest.approx(1.0)
    assert role_diversity(np.tile([0.1, 0.3, 0.0], (4, 1))) == pytest.approx(0.0, abs=1e-12)
    faint = np.array([[0.3, 0.0], [0.3, 0.0], [0.0, 0.001]])
    assert role_diversity(faint) < 0.01
    halves = np.array([[0.2, 0.0], [0.2, 0.0], [0.0, 0.2], [0.0, 0.2]])  # two roles, two heads each
    assert role_diversity(halves) == pytest.approx(2 * 4 / 12)  # 8 of the 12 ordered pairs differ
    assert role_diversity(np.array([[0.2, -0.5], [-0.1, 0.2]])) == pytest.approx(1.0)
    assert role_diversity(np.array([[0.2, 0.1], [-0.1, -0.2]])) is None
    assert role_diversity(np.array([[0.2], [0.3]])) is None
    assert role_strength(np.array([[0.3, 0.4], [-1.0, -1.0]])) == pytest.approx(0.25)


def test_logit_lag_correlation_is_one_for_equal_and_minus_one_for_mirrored_logits():
    from prism_lm.analysis.heads import _logit_lag_correlation

    T = 32
    lag = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).float()
    mask = lag < 0

    def softmax_of(logits):
        return torch.softmax(logits.masked_fill(mask, float("-inf")), -1)

    near, far = softmax_of(-0.2 * lag), softmax_of(0.2 * lag)
    A = torch.stack([near, near, near, far])[None]  # signal heads 0, 1; noise heads 0 (= near), 1 (= far)
    profile = pattern_metrics(A)["logit_profile"].numpy()
    result = _logit_lag_correlation([profile], [2], [("signal", "noise")])
    assert result["per_layer"][0] == pytest.approx([1.0, -1.0])
    assert result["mean"] == pytest.approx(0.0, abs=1e-6) and result["mean_abs"] == pytest.approx(1.0)  # cross_kernel
    assert _logit_lag_correlation([profile], [4], [("main",)]) is None


def _causal(rows):
    return torch.stack([torch.as_tensor(r, dtype=torch.float32) for r in rows])


def test_self_local_beyond_relative_entropy_and_sinks_on_heads_with_a_known_answer():
    T = 16
    self_only = torch.eye(T)
    previous = torch.zeros(T, T)
    previous[0, 0] = 1.0
    previous[torch.arange(1, T), torch.arange(T - 1)] = 1.0
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    sink = torch.zeros(T, T)
    sink[:, 0] = 1.0
    far = torch.zeros(T, T)  # every query past 12 attends 12 back, the rest to themselves
    far[torch.arange(T), torch.arange(T)] = 1.0
    far[12:, :] = 0.0
    far[torch.arange(12, T), torch.arange(0, T - 12)] = 1.0
    A = torch.stack([self_only, previous, uniform, sink, far])[None]  # (1, 5 heads, T, T)
    m = {k: v.tolist() for k, v in pattern_metrics(A).items() if k.startswith(("mass_", "entropy_rel", "sink"))}
    assert m["mass_self"][0] == pytest.approx(1.0) and m["mass_lags_1_8"][0] == pytest.approx(0.0)
    assert m["mass_self"][1] == pytest.approx(1 / T) and m["mass_lags_1_8"][1] == pytest.approx(1 - 1 / T)
    assert m["mass_beyond_8"][4] == pytest.approx(4 / T) and m["mass_lags_1_8"][4] == pytest.approx(0.0)
    for h in range(5):  # the three masses partition each query's attention
        assert m["mass_self"][h] + m["mass_lags_1_8"][h] + m["mass_beyond_8"][h] == pytest.approx(1.0)
    assert m["entropy_relative"][2] == pytest.approx(1.0)  # uniform
    assert m["entropy_relative"][0] == pytest.approx(0.0, abs=1e-6) and m["entropy_relative"][3] == pytest.approx(
        0.0, abs=1e-6)  # one key each: self, or the sink
    assert m["sink_first"][3] == pytest.approx(1.0) and m["sink_first4"][3] == pytest.approx(1.0)
    assert m["sink_first"][0] == pytest.approx(0.0) and m["sink_first"][2] == pytest.approx(
        np.mean([1 / (i + 1) for i in range(1, T)]))
    assert m["sink_first4"][2] == pytest.approx(np.mean([4 / (i + 1) for i in range(4, T)]))


def test_logit_lag_correlation_by_window_sees_where_the_streams_part():
    from prism_lm.analysis.heads import _logit_lag_correlation

    T = 64
    lags = np.arange(T, dtype=float)
    signal = -0.1 * lags
    noise = np.where(lags <= 16, -0.1 * lags, -1.6 + 0.3 * (lags - 16))  # the same out to lag 16, then apart
    result = _logit_lag_correlation([np.stack([signal, noise])], [1], [("signal", "noise")])
    assert list(result["by_window"]) == ["8", "16", "32", "63"]
    assert result["by_window"]["8"] == pytest.approx(1.0) and result["by_window"]["16"] == pytest.approx(1.0)
    assert result["by_window"]["63"] < result["by_window"]["32"] < 0.5


def test_the_kernel_ranks_an_exact_resonance_above_pi_when_all_else_is_equal():
    """C4's gate compares arms that differ only in their position code: heads whose logit-versus-lag
    profile is a shared trend (what the data puts there) plus a sum of cosines at their stream's RoPE
    frequencies. Signal and noise on one frequency ladder (m = 1) must score above signal times pi and
    noise over pi, for every trend; but a shared trend lifts both towards 1 (the look-alike of
    resonance: the contrast falls from 0.26 with no trend to under 0.01 with a log-lag one), so only
    the paired difference of arms that share everything else says "resonance", never the level."""
    from prism_lm.analysis.heads import _logit_lag_correlation

    T, pairs = 128, 16
    lags = np.arange(T, dtype=float)
    base = 10000.0 ** (-np.arange(pairs) / pairs)

    def kernel(m: float, trend: np.ndarray, weight: float) -> float:
        code = [np.cos(np.outer(lags, w)).sum(1) / pairs for w in (base * m, base / m)]
        heads = np.stack([trend + weight * code[0], trend + weight * code[1]])
        return _logit_lag_correlation([heads], [1], [("signal", "noise")])["mean_abs"]

    contrasts = [kernel(1.0, trend, 1.0) - kernel(np.pi, trend, 1.0)
                 for trend in (np.zeros(T), -0.01 * lags, -np.log1p(lags))]
    assert all(c > 0 for c in contrasts) and contrasts[0] > 0.2 > contrasts[1] > contrasts[2]
    assert kernel(1.0, np.zeros(T), 1.0) == pytest.approx(1.0)
    assert kernel(np.pi, -np.log1p(lags), 1.0) > 0.95  # the level alone cannot tell pi from m = 1


def test_answer_accuracy_per_kind_of_a_mixed_task_is_each_kinds_own_top_prediction_rate(tmp_path):
    """Two tasks prepared together (a task and the one that teaches its circuit): each kind's accuracy
    is recomputed here from the model's own argmax at that kind's answers, so a mixture cannot hide a
    task the model fails behind one it passes."""
    from prism_lm.data.synthetic import ANNOTATION_KINDS

    prepare(["synthetic:induction:60:length=6,vocab=24", "synthetic:mqar:60:pairs=3,queries=2,vocab=12"], tmp_path,
            val_fraction=0.5, compact_vocab=True, progress=False)
    shards = ShardSet(tmp_path, "val")
    T = 16
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config(vocab_size=shards.vocab_size, block_size=T))
    train = ShardSet(tmp_path, "train")
    rows = torch.from_numpy(train.windows(window_starts(train, T, None, bos=True), T + 1).astype("int64"))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
    for _ in range(25):  # a few steps, so that some answers are right and a wrong sum would show
        opt.zero_grad()
        model(rows[:, :-1], rows[:, 1:]).loss.backward()
        opt.step()
    model.eval()
    kinds = head_statistics(model, shards, max_windows=None, bos=True)["recall_loss"]["by_kind"]
    assert set(kinds) == {"copy", "mqar"}
    notes = shards.annotations()
    hits: dict[str, list[bool]] = {"copy": [], "mqar": []}
    for start in window_starts(shards, T, None, bos=True):
        row = torch.from_numpy(shards.windows([start], T + 1).astype("int64"))
        with torch.no_grad():
            top = model(row[:, :-1]).logits.argmax(-1)[0]
        for r, _antecedent, kind in notes[(notes[:, 0] > start) & (notes[:, 0] <= start + T) & (notes[:, 1] >= start)]:
            hits[ANNOTATION_KINDS[kind]].append(bool(top[r - start - 1] == row[0, r - start]))
    assert 0 < sum(hits["copy"]) and sum(hits["copy"]) / len(hits["copy"]) != sum(hits["mqar"]) / len(hits["mqar"])
    for kind, mine in hits.items():
        assert kinds[kind]["tokens"] == len(mine) > 0
        assert kinds[kind]["accuracy"] == pytest.approx(sum(mine) / len(mine))
