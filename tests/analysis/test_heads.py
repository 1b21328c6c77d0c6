import numpy as np
import pytest
import torch

from prism_lm.analysis import capture_attention
from prism_lm.analysis.heads import bootstrap_diff, head_statistics, pattern_metrics, spectral_centroid
from prism_lm.data.prepare import prepare
from prism_lm.data.shards import ShardSet
from prism_lm.model import PrismLM
from tests.conftest import tiny_config


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


def test_spectral_centroid_orders_sharp_above_smooth():
    sharp = np.zeros((1, 64))
    sharp[0, 0] = 1
    smooth = np.exp(-np.arange(64) / 20.0)[None]
    assert spectral_centroid(sharp)[0] == pytest.approx(np.fft.rfftfreq(64).mean())
    assert spectral_centroid(smooth)[0] < spectral_centroid(sharp)[0]


def test_bootstrap_interval():
    rng = np.random.default_rng(0)
    same = bootstrap_diff(rng.normal(0, 1, 30), rng.normal(0, 1, 30))
    assert same["ci95"][0] < 0 < same["ci95"][1]
    apart = bootstrap_diff(rng.normal(5, 1, 30), rng.normal(0, 1, 30))
    assert apart["ci95"][0] > 3 and apart["diff"] == pytest.approx(apart["mean_a"] - apart["mean_b"])


def test_head_statistics_and_antecedent_hits_agree_with_direct_capture(tmp_path):
    prepare(["embedded:40"], tmp_path / "d", val_fraction=0.0, compact_vocab=True, progress=False)
    shards = ShardSet(tmp_path / "d", "train")
    T = 128  # long enough that the windows hold recalls together with their antecedents
    model = PrismLM(tiny_config(vocab_size=shards.vocab_size, block_size=T)).eval()
    stats = head_statistics(model, shards, max_windows=3, batch_size=2)
    assert stats["windows"] == 3 and len(stats["heads"]) == 2 * 4
    assert {e["stream"] for e in stats["heads"]} == {"signal", "noise"}
    assert set(stats["comparison"]) >= {"a", "b", "mean_distance", "antecedent_hit_rate"}
    # recompute layer 1 hit rates by hand from the captured maps
    notes = shards.annotations()
    masses = []
    for w in range(3):
        start = w * T
        A = capture_attention(model, torch.from_numpy(shards.window(start, T))[None])["blocks.1.attn.hook_pattern"]
        for r, a, _ in notes:
            if start < r <= start + T and a >= start:
                masses.append(A[0, :, r - start - 1, a - start].numpy())
    assert masses, "the windows must hold annotated recalls"
    got = [e["antecedent_hit_rate"] for e in stats["heads"] if e["layer"] == 1]
    np.testing.assert_allclose(got, np.mean(masses, axis=0), rtol=1e-5)
    assert stats["recall_loss"]["recall_tokens"] == len(masses)
    assert stats["recall_loss"]["recall_tokens"] + stats["recall_loss"]["other_tokens"] == 3 * T
