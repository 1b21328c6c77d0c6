import math

import numpy as np
import pytest
import torch

from prism_lm.analysis.spectral import coding_rate, coherence, cross_kernel, layer_coding_rates, resonance_table
from prism_lm.model import PrismLM
from prism_lm.model.attention import PrismAttention
from tests.conftest import tiny_config


def test_cross_kernel_against_loops():
    D, W, m = 8, 20, math.pi
    got = cross_kernel(1e4 * m, 1e4 / m, D, W)
    vals = []
    for i in range(1, D // 2):
        for j in range(1, D // 2):
            ws, wn = (1e4 * m) ** (-i / (D / 2)), (1e4 / m) ** (-j / (D / 2))
            vals.append((i == j, abs(sum(math.cos(ws * t) * math.cos(wn * t) for t in range(W)) / W)))
    assert got["matched"] == pytest.approx(np.mean([v for same, v in vals if same]))
    assert got["all_pairs"] == pytest.approx(np.mean([v for _, v in vals]))


def test_multiplier_one_resonates_most():
    table = resonance_table(tiny_config(n_embd=64, n_head=2), windows=(128,), sweep=7)  # D = 64
    matched = {k: v["128"]["matched"] for k, v in table["named"].items()}
    assert max(matched, key=matched.get) == "1"
    assert matched["pi"] < matched["1"]
    assert len(table["sweep_m"]) == 7 and table["sweep"]["128"][0] == pytest.approx(matched["1"])


def test_coherence_bounds():
    attn = PrismAttention(tiny_config(), 0)
    rows, C = attn.u_proj.weight.shape
    half, k = rows // 2, C // 2
    with torch.no_grad():
        attn.u_proj.weight.zero_()
        attn.u_proj.weight[:k, :k] = torch.eye(k)  # signal atoms span the first half of the dims
        attn.u_proj.weight[half:half + k, k:] = torch.eye(k)  # noise atoms span the other half
    assert coherence(attn) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        attn.u_proj.weight[half:] = attn.u_proj.weight[:half]
    assert coherence(attn) == pytest.approx(1.0, abs=1e-5)
    assert coherence(PrismAttention(tiny_config(noise_stream=False), 0)) is None


def test_coding_rate_formula():
    Z = torch.randn(5, 40, dtype=torch.float64)
    expected = 0.5 * np.linalg.slogdet(np.eye(5) + 5 / (40 * 0.25) * (Z @ Z.T).numpy())[1]
    assert coding_rate(Z, eps=0.5) == pytest.approx(expected)
    assert coding_rate(Z.T.contiguous(), eps=0.5) == pytest.approx(
        0.5 * np.linalg.slogdet(np.eye(40) + 40 / (5 * 0.25) * (Z.T @ Z).numpy())[1])
    assert coding_rate(torch.zeros(3, 10, dtype=torch.float64)) == 0


def test_layer_coding_rates_delta():
    model = PrismLM(tiny_config())
    model.set_scheduled_lambda(0.3)
    rows = layer_coding_rates(model, torch.randint(0, 97, (2, 16)))
    assert len(rows) == 2
    for r in rows:
        assert r["delta_R"] == pytest.approx(r["R_signal"] - 0.3 * r["R_noise"], rel=1e-6)
    assert set(layer_coding_rates(PrismLM(tiny_config("gpt")), torch.randint(0, 97, (1, 8)))[0]) == {"layer", "R"}


def test_rope_base_reaches_the_model_and_the_resonance_analysis():
    base, moved = tiny_config(n_embd=64, n_head=2), tiny_config(n_embd=64, n_head=2, rope_base=500.0)
    assert PrismAttention.rope_bases(moved) == pytest.approx([500.0 * math.pi, 500.0 / math.pi])
    assert PrismAttention(moved, 0).rotary.bases == pytest.approx([500.0 * math.pi, 500.0 / math.pi])
    table, moved_table = (resonance_table(c, windows=(128,), sweep=3) for c in (base, moved))
    assert moved_table["rope_base"] == 500.0
    assert moved_table["named"]["pi"]["128"] == cross_kernel(500.0 * math.pi, 500.0 / math.pi, 64, 128)
    assert moved_table["named"]["pi"]["128"] != table["named"]["pi"]["128"]


def test_coherence_floor_and_head_pairs():
    from prism_lm.analysis.spectral import coherence_floor, head_pair_coherence

    cfg = tiny_config(n_embd=32, n_head=2)
    floor = coherence_floor(cfg)
    assert 0.2 < floor < 1  # an R = 2 stream spans the whole space: far from 0 at init
    attn = PrismAttention(cfg, 0)
    pairs = head_pair_coherence(attn)
    assert len(pairs) == 2 and all(0 <= x <= 1 + 1e-6 for x in pairs)
    with torch.no_grad():  # noise head 0 = signal head 0: that pair is fully coherent
        U = attn.dictionary()
        U[1, 0] = U[0, 0]
    assert head_pair_coherence(attn)[0] == pytest.approx(1.0, abs=1e-5)
    assert head_pair_coherence(PrismAttention(tiny_config(noise_stream=False), 0)) is None
