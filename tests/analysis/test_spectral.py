import json
import math

import numpy as np
import pytest
import torch

from prism_lm.analysis.spectral import (
    closest_approach,
    coding_rate,
    coherence,
    cross_kernel,
    distinguishing_window,
    ladder_rungs,
    layer_coding_rates,
    resonance_table,
    stream_frequencies_of,
)
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM
from prism_lm.model.attention import PrismAttention
from prism_lm.model.kinds import validate_model
from prism_lm.model.rope import inv_frequencies
from tests.helpers import tiny_model_config


def test_cross_kernel_against_loops():
    D, W, m = 8, 20, math.pi
    w_s, w_n = (inv_frequencies(D, b, torch.float64).numpy() for b in (1e4 * m, 1e4 / m))
    got = cross_kernel(w_s, w_n, W, skip=1)
    vals = []
    for i in range(1, D // 2):
        for j in range(1, D // 2):
            ws, wn = (1e4 * m) ** (-i / (D / 2)), (1e4 / m) ** (-j / (D / 2))
            vals.append((i == j, abs(sum(math.cos(ws * t) * math.cos(wn * t) for t in range(W)) / W)))
    assert got["matched"] == pytest.approx(np.mean([v for same, v in vals if same]))
    assert got["all_pairs"] == pytest.approx(np.mean([v for _, v in vals]))


def test_multiplier_one_resonates_most():
    table = resonance_table(tiny_model_config(n_embd=64, n_head=2), windows=(128,), sweep=7)  # D = 64
    matched = {k: v["128"]["matched"] for k, v in table["named"]["base"].items()}
    assert max(matched, key=matched.get) == "1"
    assert matched["pi"] < matched["1"]
    assert len(table["sweep_m"]) == 7 and table["sweep"]["128"][0] == pytest.approx(matched["1"])


def test_coherence_bounds():
    attn = PrismAttention(tiny_model_config(), 0)
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
    assert coherence(PrismAttention(tiny_model_config(prism=dict(noise_stream=False)), 0)) is None


def test_coding_rate_formula():
    Z = torch.randn(5, 40, dtype=torch.float64)
    expected = 0.5 * np.linalg.slogdet(np.eye(5) + 5 / (40 * 0.25) * (Z @ Z.T).numpy())[1]
    assert coding_rate(Z, eps=0.5) == pytest.approx(expected)
    assert coding_rate(Z.T.contiguous(), eps=0.5) == pytest.approx(
        0.5 * np.linalg.slogdet(np.eye(40) + 40 / (5 * 0.25) * (Z.T @ Z).numpy())[1])
    assert coding_rate(torch.zeros(3, 10, dtype=torch.float64)) == 0


def test_layer_coding_rates_delta():
    model = PrismLM(tiny_model_config())
    model.set_scheduled_lambda(0.3)
    rows = layer_coding_rates(model, torch.randint(0, 97, (2, 16)))
    assert len(rows) == 2
    for r in rows:
        assert r["delta_R"] == pytest.approx(r["R_signal"] - 0.3 * r["R_noise"], rel=1e-6)
    assert set(layer_coding_rates(PrismLM(tiny_model_config("gpt")), torch.randint(0, 97, (1, 8)))[0]) == {"layer", "R"}


def test_rope_base_reaches_the_model_and_the_resonance_analysis():
    base, moved = tiny_model_config(n_embd=64, n_head=2), tiny_model_config(n_embd=64, n_head=2, rope_base=500.0)
    assert PrismAttention.rope_bases(moved) == pytest.approx([500.0 * math.pi, 500.0 / math.pi])
    assert PrismAttention(moved, 0).rotary.bases == pytest.approx([500.0 * math.pi, 500.0 / math.pi])
    table, moved_table = (resonance_table(c, windows=(128,), sweep=3) for c in (base, moved))
    assert moved_table["rope_base"] == 500.0
    moved_pi = moved_table["named"]["base"]["pi"]["128"]
    w_s, w_n = (inv_frequencies(64, b, torch.float64).numpy() for b in (500.0 * math.pi, 500.0 / math.pi))
    assert {k: moved_pi[k] for k in ("matched", "all_pairs")} == cross_kernel(w_s, w_n, 128, skip=1)
    assert moved_pi["closest"] == closest_approach(w_s, w_n, 128, skip=1)
    assert moved_table["named"]["base"]["pi"]["128"] != table["named"]["base"]["pi"]["128"]


def test_coherence_floor_and_head_pairs():
    from prism_lm.analysis.spectral import coherence_floor, head_pair_coherence

    cfg = tiny_model_config(n_embd=32, n_head=2)
    floor = coherence_floor(cfg)
    assert 0.2 < floor < 1  # an R = 2 stream spans the whole space: far from 0 at init
    attn = PrismAttention(cfg, 0)
    pairs = head_pair_coherence(attn)
    assert len(pairs) == 2 and all(0 <= x <= 1 + 1e-6 for x in pairs)
    with torch.no_grad():  # noise head 0 = signal head 0: that pair is fully coherent
        U = attn.dictionary()
        U[1, 0] = U[0, 0]
    assert head_pair_coherence(attn)[0] == pytest.approx(1.0, abs=1e-5)
    assert head_pair_coherence(PrismAttention(tiny_model_config(prism=dict(noise_stream=False)), 0)) is None


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

    model = PrismLM(tiny_model_config()).eval()
    idx = torch.randint(0, 97, (3, 24))
    natural = attention_step_rates(model, idx)
    assert len(natural) == 2 and all(0 <= r["rises"] <= 1 and r["windows"] == 3 for r in natural)
    fall = attention_step_rates(_collapse_or_spread(PrismLM(tiny_model_config()).eval(), spread=False), idx)
    assert all(r["rises"] == 0.0 and r["delta_R_out"] < r["delta_R_in"] for r in fall)
    same = torch.zeros(3, 24, dtype=torch.long)  # one token repeated: the first layer's input is collapsed
    rise = attention_step_rates(_collapse_or_spread(PrismLM(tiny_model_config()).eval(), spread=True), same)
    assert rise[0]["rises"] == 1.0 and rise[0]["delta_R_out"] > rise[0]["delta_R_in"]
    assert attention_step_rates(PrismLM(tiny_model_config("gpt")), idx) is None


def test_frequency_scaling_makes_every_matched_ratio_exactly_m_squared():
    for m in (math.pi, math.sqrt(2.0), 1.5, 355 / 113):
        cfg = tiny_model_config(n_embd=64, n_head=2, prism=dict(freq_multiplier=m, rope_scaling="frequency"))
        w_s, w_n = stream_frequencies_of(cfg, m)
        np.testing.assert_allclose(w_s / w_n, m * m, rtol=1e-13)
        attn = PrismAttention(cfg, 0)  # the model's own fp32 tables rotate at the same frequencies
        angle = torch.atan2(attn.rotary.sin[:, 0, 1], attn.rotary.cos[:, 0, 1])  # position 1: (S, D/2)
        np.testing.assert_allclose(np.abs(angle.numpy()), alias_np(np.stack([w_s, w_n])), rtol=1e-5, atol=1e-6)
    base = stream_frequencies_of(tiny_model_config(n_embd=64, n_head=2), math.pi)  # the official scaling
    assert base[0][0] == base[1][0] == 1.0  # pair 0 turns at 1 rad/token in both streams whatever m is
    assert not np.allclose(base[0][1:] / base[1][1:], math.pi ** 2)
    with pytest.raises(PrismError, match="rope_scaling"):
        validate_model(tiny_model_config(prism=dict(rope_scaling="ratio")))
    with pytest.raises(PrismError, match="one RoPE ladder"):
        validate_model(tiny_model_config("gpt-rope", prism=dict(rope_scaling="frequency")))


def alias_np(x):
    return np.abs(np.mod(x + np.pi, 2 * np.pi) - np.pi)


def test_closest_approach_against_loops_and_exact_rational_resonances():
    cfg = tiny_model_config(n_embd=64, n_head=2, block_size=128, prism=dict(rope_scaling="frequency"))
    w_s, w_n = stream_frequencies_of(cfg, math.pi)
    turn = 2 * math.pi / 128
    brute = min(alias_np(n * a - k * b) for n in range(1, 5) for k in range(1, 5)
                for a in w_s if alias_np(a) >= turn for b in w_n if alias_np(b) >= turn)
    got = closest_approach(w_s, w_n, 128, max_order=4)
    assert got["gap"] == pytest.approx(brute) and got["lock_window"] == pytest.approx(2 * math.pi / brute)
    # m² rational (2, 9/4): an exact matched resonance at orders (q, p); π² is not, at any order here
    for m, orders in ((math.sqrt(2.0), (1, 2)), (1.5, (4, 9))):
        exact = closest_approach(*stream_frequencies_of(cfg, m), 128, max_order=16, matched_only=True)
        assert exact["gap"] == 0.0 and exact["lock_window"] is None and exact["orders"] == orders
    assert closest_approach(w_s, w_n, 128, max_order=16, matched_only=True)["gap"] > 1e-4
    # (22/7)² = 484/49: exact only once the orders reach 484
    w22 = stream_frequencies_of(cfg, 22 / 7)
    assert closest_approach(*w22, 128, max_order=16, matched_only=True)["gap"] > 0
    assert closest_approach(*w22, 128, max_order=484, matched_only=True)["gap"] == 0.0


def test_distinguishing_window_tells_pi_from_its_rational_neighbours_only_over_long_windows():
    cfg = tiny_model_config(n_embd=64, n_head=2, block_size=128)
    for scaling in ("base", "frequency"):
        w22 = distinguishing_window(cfg, math.pi, 22 / 7, scaling)
        w355 = distinguishing_window(cfg, math.pi, 355 / 113, scaling)
        assert 128 < w22 < w355 and w355 > 1e6  # no training window tells π from 355/113
        assert distinguishing_window(cfg, math.pi, 2.0, scaling) < 128
    # frequency scaling: the top signal pair turns at m rad/token, so 22/7 parts from π after 1/|Δm| tokens
    assert distinguishing_window(cfg, math.pi, 22 / 7, "frequency") == pytest.approx(1 / (22 / 7 - math.pi))


def test_resonance_table_tells_pi_from_22_7_where_the_old_count_could_not():
    cfg = tiny_model_config(n_embd=64, n_head=2, block_size=128)
    table = resonance_table(cfg, windows=(128,), sweep=5)
    freq = table["named"]["frequency"]
    assert freq["sqrt2"]["128"]["closest_matched"]["gap"] == 0.0  # m² = 2
    assert freq["pi"]["128"]["closest_matched"]["gap"] != freq["22/7"]["128"]["closest_matched"]["gap"]
    assert table["named"]["base"]["1"]["128"]["closest_matched"]["gap"] == 0.0  # m = 1: identical streams
    assert table["window_to_tell_from_pi"]["base"]["355/113"] > table["window_to_tell_from_pi"]["base"]["22/7"]
    assert len(table["sweep_gap"]["128"]) == 5 and "no finite window" in table["what"]
    json.dumps(table, allow_nan=False)  # the report writes it as JSON


def test_step_cosines_tell_a_gradient_step_from_chance():
    from prism_lm.analysis.spectral import attention_step_rates, delta_r_gradient, normalised_delta_r, step_cosines

    torch.manual_seed(0)
    Z, U = torch.randn(16, 8, dtype=torch.float64), torch.randn(2, 2, 4, 8, dtype=torch.float64)
    grad = delta_r_gradient(Z, U, 0.1)
    h = 1e-6  # the gradient against a finite difference along a random direction
    d = torch.randn_like(Z)
    numeric = (normalised_delta_r(Z + h * d, U, 0.1) - normalised_delta_r(Z - h * d, U, 0.1)) / (2 * h)
    assert float((grad * d).sum()) == pytest.approx(numeric, rel=1e-5)
    exact = step_cosines(0.01 * grad, grad)
    assert exact["cosine"] == pytest.approx(1.0) and exact["random_abs_p95"] < 0.5
    chance = step_cosines(torch.randn_like(Z), grad)
    assert abs(chance["cosine"]) < 0.5 and chance["random_abs_mean"] == pytest.approx(exact["random_abs_mean"])
    rows = attention_step_rates(PrismLM(tiny_model_config()).eval(), torch.randint(0, 97, (2, 24)))
    assert all(-1 <= r["grad_cosine"] <= 1 and 0 < r["grad_random_abs_mean"] < r["grad_random_abs_p95"] for r in rows)


def test_the_resonance_figure_never_prints_one_multipliers_name_over_anothers(tmp_path, monkeypatch):
    """pi, 355/113, 22/7 and sqrt10 sit within 0.03 of each other on the m axis: their labels stack."""
    import matplotlib

    matplotlib.use("Agg")
    from prism_lm.analysis import figures
    from prism_lm.analysis.spectral import resonance_table

    kept = {}
    real = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, out, name: kept.setdefault(name, fig) and real(fig, out, name))
    table = resonance_table(tiny_model_config(n_embd=64, n_head=2, block_size=64), windows=(64,), sweep=11)
    figures.resonance(table, tmp_path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    fig = kept["resonance"]
    canvas = FigureCanvasAgg(fig)  # the saved figure is closed: draw it again to measure its labels
    canvas.draw()
    renderer = canvas.get_renderer()
    for axis in fig.axes:
        boxes = [(t.get_text(), Text.get_window_extent(t, renderer)) for t in axis.texts]  # the words, not arrows
        assert {"pi", "355/113", "22/7", "sqrt10"} <= {name for name, _ in boxes}
        for i, (a, box_a) in enumerate(boxes):
            for b, box_b in boxes[i + 1:]:
                assert not box_a.overlaps(box_b), (a, b)


def test_a_whole_number_of_rungs_is_an_exact_ladder_shift_and_pi_sits_next_to_sqrt10s():
    """Under frequency scaling, m² a whole number of the ladder's rungs makes the noise ladder the signal
    ladder shifted (an exact order-1 resonance, whether m² is rational or not); π² = 9.87 sits 0.05 rungs
    from √10's exact 8 on a D = 64, base-10000 ladder, so on windows shorter than its lock window (about
    8,500 tokens) π looks as resonant as √10 at order 1."""
    cfg = tiny_model_config(n_embd=64, n_head=2)  # D = 64: 32 rungs of 10000^(1/32)
    assert ladder_rungs(cfg, math.sqrt(10.0)) == pytest.approx(8.0)
    assert ladder_rungs(cfg, 1.0) == 0.0
    assert ladder_rungs(cfg, math.pi) == pytest.approx(7.954, abs=1e-3)
    rung = 1e4 ** (1 / 64)  # m = the square root of one rung's ratio: a one-rung shift, irrational
    assert ladder_rungs(cfg, rung) == pytest.approx(1.0)
    exact = closest_approach(*stream_frequencies_of(cfg, rung, "frequency"), 128, max_order=1)
    assert exact["gap"] == 0.0 and exact["pair"][0] == exact["pair"][1] + 1
    pi = closest_approach(*stream_frequencies_of(cfg, math.pi, "frequency"), 128, max_order=1)
    assert pi["pair"][0] - pi["pair"][1] == 8 and 8000 < pi["lock_window"] < 9000
    assert resonance_table(cfg, windows=(128,), sweep=3)["ladder_rungs"]["sqrt10"] == pytest.approx(8.0)
    off_ladder = closest_approach(*stream_frequencies_of(cfg, math.sqrt(2.0), "frequency"), 128, max_order=1)
    assert off_ladder["lock_window"] < 1000  # ratio 2, 2.4 rungs: rational, yet further from locking than π
