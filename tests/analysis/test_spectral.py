import math

import numpy as np
import pytest
import torch

from prism_lm.analysis.spectral import (
    coding_rate,
    coherence,
    cross_kernel,
    layer_coding_rates,
    near_resonances,
    resonance_table,
)
from prism_lm.model import PrismLM
from prism_lm.model.attention import PrismAttention
from prism_lm.model.rope import inv_frequencies
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
    moved_pi = moved_table["named"]["pi"]["128"]
    assert {k: moved_pi[k] for k in ("matched", "all_pairs")} == cross_kernel(500.0 * math.pi, 500.0 / math.pi, 64, 128)
    assert moved_pi["near_resonances"] == near_resonances(500.0 * math.pi, 500.0 / math.pi, 64, 128)
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


def test_normalised_delta_r_ignores_the_scale_of_tokens_and_dictionary():
    from prism_lm.analysis.spectral import coding_rate, normalised_delta_r

    Z = torch.randn(40, 16, dtype=torch.float64)
    U = torch.randn(2, 2, 8, 16, dtype=torch.float64)
    base = normalised_delta_r(Z, U, 0.1)
    assert normalised_delta_r(3 * Z, U, 0.1) == pytest.approx(base)
    assert normalised_delta_r(Z, 5 * U, 0.1) == pytest.approx(base)
    assert coding_rate((2 * Z).T) > coding_rate(Z.T)  # the raw rate is not scale-free: the reason for this one


def _collapse_or_spread(model, spread: bool):
    """Make every PRISM layer's update collapse its tokens onto one direction, or spread collapsed ones."""
    for block in model.blocks:
        def forward(x, *args, **kwargs):
            if spread:  # inputs are all one token: push them apart
                return torch.randn_like(x) * 5, None
            return x.mean(1, keepdim=True).expand_as(x) * 50 - x, None  # all tokens become (nearly) one
        block.attn.forward = forward
    return model


def test_attention_step_rates_see_a_collapse_as_a_fall_and_a_spread_as_a_rise():
    from prism_lm.analysis.spectral import attention_step_rates

    model = PrismLM(tiny_config()).eval()
    idx = torch.randint(0, 97, (3, 24))
    natural = attention_step_rates(model, idx)
    assert len(natural) == 2 and all(0 <= r["rises"] <= 1 and r["windows"] == 3 for r in natural)
    fall = attention_step_rates(_collapse_or_spread(PrismLM(tiny_config()).eval(), spread=False), idx)
    assert all(r["rises"] == 0.0 and r["delta_R_out"] < r["delta_R_in"] for r in fall)
    same = torch.zeros(3, 24, dtype=torch.long)  # one token repeated: the first layer's input is collapsed
    rise = attention_step_rates(_collapse_or_spread(PrismLM(tiny_config()).eval(), spread=True), same)
    assert rise[0]["rises"] == 1.0 and rise[0]["delta_R_out"] > rise[0]["delta_R_in"]
    assert attention_step_rates(PrismLM(tiny_config("gpt")), idx) is None


def test_near_resonances_count_locked_pairs_and_m1_locks_every_matched_pair():
    from prism_lm.analysis.spectral import stream_bases

    cfg = tiny_config(n_embd=64, n_head=2, block_size=128)  # D = 64: 31 pairs besides pair 0
    turning = int((inv_frequencies(cfg.head_dim, 10000.0, torch.float64)[1:] >= 2 * math.pi / 128).sum())
    assert near_resonances(10000.0, 10000.0, cfg.head_dim, 128, max_order=1) >= turning  # m = 1: i = j locks
    # the definition, written out as loops: pairs of turning frequencies locked by some n, k <= 3
    w_s, w_n = (inv_frequencies(cfg.head_dim, b, torch.float64)[1:].tolist() for b in stream_bases(cfg, math.pi))
    turn = 2 * math.pi / 128
    brute = sum(any(abs(n * a - k * b) * 128 < 2 * math.pi for n in (1, 2, 3) for k in (1, 2, 3))
                for a in w_s if a >= turn for b in w_n if b >= turn)
    assert near_resonances(*stream_bases(cfg, math.pi), cfg.head_dim, 128) == brute > 0
    # more orders can only add locked pairs
    assert near_resonances(*stream_bases(cfg, math.pi), cfg.head_dim, 128, max_order=3) >= \
        near_resonances(*stream_bases(cfg, math.pi), cfg.head_dim, 128, max_order=1)
    table = resonance_table(cfg, windows=(128,), sweep=5)
    assert table["named"]["1"]["128"]["near_resonances"] >= turning
    assert len(table["sweep_near_resonances"]["128"]) == 5 and "first-order" in table["what"]
