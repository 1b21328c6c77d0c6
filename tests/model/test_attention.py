"""PRISM attention and the baselines: paths agree, the knobs do what they say, eq. 7 holds."""

import math

import pytest
import torch

from prism_lm.config import ModelConfig
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM, attend
from prism_lm.model.attention import PrismAttention
from prism_lm.model.config import NAMED_MULTIPLIERS, resolve_multiplier
from prism_lm.model.kinds import validate_model
from prism_lm.model.rope import Rotary, interleaved_to_halves
from tests.helpers import ALL_KINDS, tiny_model_config
from tests.reference import prism_attention_eq7, rope_interleaved


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_sdpa_and_eager_paths_agree(kind):
    model = PrismLM(tiny_model_config(kind)).eval()
    model.set_scheduled_lambda(0.3)
    idx = torch.randint(0, 97, (3, 32))
    fast = model(idx).logits
    eager = model(idx, eager=True).logits
    torch.testing.assert_close(fast, eager, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_attention_probabilities_per_stream(kind):
    model = PrismLM(tiny_model_config(kind)).eval()
    idx = torch.randint(0, 97, (2, 10))
    logits, maps = model.forward_with_attention(idx)
    torch.testing.assert_close(logits, model(idx).logits, atol=1e-5, rtol=1e-5)
    attn = model.blocks[0].attn
    n_maps = len(attn.stream_names) * attn.n_head
    assert len(maps) == 2 and maps[0].shape == (2, n_maps, 10, 10)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, n_maps, 10))
    assert torch.all(maps[0].triu(diagonal=1) == 0), "causal: no mass on future keys"


def test_attend_with_offset_queries_matches_full():
    q = torch.randn(2, 3, 9, 8)
    k, v = torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 5)
    full, _ = attend(q, k, v, dropout_p=0.0, eager=False, need_weights=False)
    for eager in (False, True):
        tail, _ = attend(q[:, :, 6:], k, v, dropout_p=0.0, eager=eager, need_weights=False)
        torch.testing.assert_close(tail, full[:, :, 6:], atol=1e-5, rtol=1e-5)


def _to_interleaved(u_weight: torch.Tensor, head_dim: int) -> torch.Tensor:
    perm = interleaved_to_halves(head_dim)
    out = torch.empty_like(u_weight).view(-1, head_dim, u_weight.shape[1])
    out[:, perm] = u_weight.view(-1, head_dim, u_weight.shape[1])
    return out.view_as(u_weight)


@pytest.mark.parametrize("ratio", [1, 2, 4])
@pytest.mark.parametrize("multiplier", ["pi", 2.0, "3/2", 1.0])
def test_prism_attention_equals_naive_eq7(ratio, multiplier):
    cfg = tiny_model_config(block_size=12, prism=dict(expansion_ratio=ratio, freq_multiplier=multiplier))
    attn = PrismAttention(cfg, 0).eval()
    attn.reset_parameters()
    attn.lambda_.fill_(0.37)
    z = torch.randn(2, 12, cfg.n_embd)
    ours, _ = attn(z)
    u_official = _to_interleaved(attn.u_proj.weight.detach(), PrismAttention.head_width(cfg))
    for b in range(2):
        ref = prism_attention_eq7(z[b], u_official, cfg.n_head, 0.37, resolve_multiplier(multiplier), ratio)
        torch.testing.assert_close(ours[b], ref, atol=1e-5, rtol=1e-4)


def test_rotary_halves_layout_equals_interleaved_pairs():
    D, T = 8, 7
    x = torch.randn(T, D)
    rot = Rotary(D, [31415.9], max_len=T)
    perm = interleaved_to_halves(D)
    ours = rot(x[:, perm].view(1, 1, T, D)).view(T, D)
    torch.testing.assert_close(ours, rope_interleaved(x, 31415.9)[:, perm], atol=1e-6, rtol=1e-5)


def test_rotary_stays_fp32_in_bf16_model():
    model = PrismLM(tiny_model_config(block_size=512, n_head=1, n_embd=16)).to(torch.bfloat16)
    rot = model.blocks[0].attn.rotary
    cos, _ = rot.tables(torch.device("cpu"))
    assert cos.dtype == torch.float32
    # positions 0..511 in bf16 collapse; the angle table of the slowest pair keeps them distinct
    assert torch.unique(cos[0, 0, :, -1]).numel() > 500
    assert torch.unique(torch.arange(512, dtype=torch.bfloat16)).numel() < 512


def test_stream_bases_follow_multiplier():
    for name, value in NAMED_MULTIPLIERS.items():
        attn = PrismAttention(tiny_model_config(prism=dict(freq_multiplier=name)), 0)
        assert attn.rotary.bases == pytest.approx([10000 * value, 10000 / value])
    assert resolve_multiplier("3/2") == 1.5 and resolve_multiplier(2) == 2.0
    for bad in ("tau", "0", -1.0, "1/0", True):
        with pytest.raises(PrismError):
            resolve_multiplier(bad)


def test_multiplier_one_makes_streams_share_frequencies():
    attn = PrismAttention(tiny_model_config(prism=dict(freq_multiplier=1)), 0)
    cos, sin = attn.rotary.tables(torch.device("cpu"))
    assert torch.equal(cos[0], cos[1]) and torch.equal(sin[0], sin[1])
    attn_pi = PrismAttention(tiny_model_config(prism=dict(freq_multiplier="pi")), 0)
    cos_pi, _ = attn_pi.rotary.tables(torch.device("cpu"))
    assert not torch.equal(cos_pi[0], cos_pi[1])


@pytest.mark.parametrize("ratio", [1, 2, 4])
def test_expansion_ratio_sets_dictionary_width(ratio):
    cfg = tiny_model_config(prism=dict(expansion_ratio=ratio))
    attn = PrismAttention(cfg, 0)
    D = cfg.n_embd // cfg.n_head * ratio
    assert attn.head_dim == D and attn.u_proj.weight.shape == (2 * cfg.n_head * D, cfg.n_embd)
    assert attn.output_scale == pytest.approx(1 / math.sqrt(2 * cfg.n_head * ratio))


def test_noise_off_equals_full_model_at_lambda_zero():
    full = PrismAttention(tiny_model_config(), 0).eval()
    full.reset_parameters()
    full.lambda_.fill_(0.0)
    signal_only = PrismAttention(tiny_model_config(prism=dict(noise_stream=False)), 0).eval()
    half = signal_only.u_proj.weight.shape[0]
    assert half * 2 == full.u_proj.weight.shape[0]
    with torch.no_grad():
        signal_only.u_proj.weight.copy_(full.u_proj.weight[:half])
    z = torch.randn(2, 9, 32)
    torch.testing.assert_close(signal_only(z)[0], full(z)[0], atol=1e-6, rtol=1e-5)
    assert signal_only.stream_names == ("signal",)


def test_lambda_subtracts_noise_stream_linearly():
    attn = PrismAttention(tiny_model_config(), 0).eval()
    z = torch.randn(1, 6, 32)
    outs = []
    for lam in (0.0, 0.1, 0.2):
        attn.lambda_.fill_(lam)
        outs.append(attn(z)[0])
    assert not torch.allclose(outs[0], outs[1])
    torch.testing.assert_close(outs[2] - outs[1], outs[1] - outs[0], atol=1e-6, rtol=1e-4)


def test_learned_lambda_is_trained_parameter():
    model = PrismLM(tiny_model_config(prism=dict(lambda_schedule="learned")))
    attn = model.blocks[1].attn
    assert "lambda_" not in dict(model.named_buffers())
    lam0 = float(attn.current_lambda().detach())
    assert abs(lam0 - 0.01) < 0.2  # λ_init + exp(q1.k1) - exp(q2.k2), small at init
    idx = torch.randint(0, 97, (2, 8))
    _, loss = model(idx, idx)
    loss.backward()
    assert attn.learned_lambda.q1.grad is not None and attn.learned_lambda.q1.grad.abs().sum() > 0
    model.set_scheduled_lambda(0.5)  # scheduled λ only: a learned λ is left alone
    assert float(attn.current_lambda().detach()) == pytest.approx(lam0)


def test_constant_and_cosine_lambda_are_buffers_set_by_step():
    from prism_lm.train.schedules import lambda_value

    assert lambda_value(0, 100, 0.01, 0.1) == pytest.approx(0.01)
    assert lambda_value(50, 100, 0.01, 0.1) == pytest.approx(0.055)
    assert lambda_value(100, 100, 0.01, 0.1) == pytest.approx(0.1)
    assert lambda_value(500, 100, 0.01, 0.1) == pytest.approx(0.1)
    assert lambda_value(25, 100, 0.01, 0.1) == pytest.approx(0.01 + 0.09 * 0.5 * (1 - math.cos(math.pi / 4)))
    model = PrismLM(tiny_model_config(prism=dict(lambda_schedule="constant", lambda_start=0.2)))
    assert model.lambdas() == pytest.approx([0.2, 0.2])
    model.set_scheduled_lambda(0.07)
    assert model.lambdas() == pytest.approx([0.07, 0.07])


def test_untied_output_starts_equal_then_learns_separately():
    tied = PrismLM(tiny_model_config())
    untied = PrismLM(tiny_model_config(prism=dict(tied_output=False)))
    assert untied.num_params() - tied.num_params() == 2 * tied.blocks[0].attn.u_proj.weight.numel()
    attn = untied.blocks[0].attn
    torch.testing.assert_close(attn.out_proj.weight, attn.u_proj.weight.t())
    z = torch.randn(1, 5, 32)
    before = attn(z)[0]
    with torch.no_grad():
        attn.out_proj.weight.mul_(2.0)
    torch.testing.assert_close(attn(z)[0], 2 * before)


def test_u_is_orthogonal_at_init():
    model = PrismLM(ModelConfig(n_layer=1, n_head=4, n_embd=64, vocab_size=50, block_size=16))
    U = model.blocks[0].attn.u_proj.weight  # (2HD, C), tall: orthonormal columns
    torch.testing.assert_close(U.T @ U, torch.eye(64), atol=1e-5, rtol=0)


def test_diff_lambda_init_depends_on_layer():
    model = PrismLM(tiny_model_config("diff", n_layer=3))
    inits = [b.attn.lambda_init for b in model.blocks]
    assert inits == pytest.approx([0.8 - 0.6 * math.exp(-0.3 * layer) for layer in range(3)])


def test_every_kind_declares_what_the_rest_of_prism_lm_asks():
    from prism_lm.model import ATTENTION_KINDS, AttentionKind

    assert {"prism", "gpt", "gpt-rope", "diff"} <= set(ATTENTION_KINDS)
    for name, kind in ATTENTION_KINDS.items():
        cfg = tiny_model_config(name)
        attn = kind(cfg, 0)
        assert issubclass(kind, AttentionKind) and kind.name == name
        assert attn.stream_names == kind.streams(cfg)
        assert all(w > 0 for w in kind.map_widths(cfg))
        lam = attn.current_lambda()
        assert (lam is None) == (name in ("gpt", "gpt-rope", "crate"))
    with pytest.raises(PrismError, match="must be one of .*gpt-rope"):
        validate_model(tiny_model_config("nope"))


def test_gpt_rope_rotates_queries_and_keys():
    """Same weights: GPT with RoPE differs from GPT exactly by the rotation (shift-invariant scores)."""
    torch.manual_seed(0)
    rope, plain = PrismLM(tiny_model_config("gpt-rope")).eval(), PrismLM(tiny_model_config("gpt")).eval()
    plain.load_state_dict(rope.state_dict())
    idx = torch.randint(0, 97, (2, 12))
    assert not torch.allclose(rope(idx).logits, plain(idx).logits)
    attn = rope.blocks[0].attn
    q = torch.randn(1, attn.n_head, 6, attn.head_dim)
    pos = torch.arange(6)
    scores = attn.rotate(q, pos) @ attn.rotate(q, pos).transpose(-2, -1)
    shifted = attn.rotate(q, pos + 5) @ attn.rotate(q, pos + 5).transpose(-2, -1)
    torch.testing.assert_close(scores, shifted, atol=1e-4, rtol=1e-4)
    with pytest.raises(PrismError, match="even head dim"):
        validate_model(tiny_model_config("gpt-rope", n_embd=30, n_head=2))


def test_prism_dictionary_view_and_shape():
    cfg = tiny_model_config()
    attn = PrismAttention(cfg, 0)
    S, H, D, C = PrismAttention.dictionary_shape(cfg)
    assert attn.dictionary().shape == (S, H, D, C) == (2, 2, PrismAttention.head_width(cfg), cfg.n_embd)
    assert torch.equal(attn.dictionary()[1, 0], attn.u_proj.weight[H * D:(H + 1) * D])  # noise head 0


def test_rotary_tables_follow_the_device_but_never_the_dtype():
    model = PrismLM(tiny_model_config()).to("meta").to(torch.bfloat16)
    rotary = model.blocks[0].attn.rotary
    assert rotary.cos.device.type == "meta" and rotary.cos.dtype == torch.float32


def test_diff_applies_no_attention_dropout_like_the_reference_but_gpt_does():
    """The reference Differential Transformer drops nothing inside attention; only the residual
    dropout (the model's, for every kind) remains."""
    x = torch.randn(2, 16, 32)
    outputs = {}
    for kind in ("diff", "gpt"):
        attn = PrismLM(tiny_model_config(kind, dropout=0.5)).blocks[0].attn.train()
        attn.resid_dropout = torch.nn.Identity()
        torch.manual_seed(1)
        first = attn(x)[0]
        torch.manual_seed(2)
        outputs[kind] = torch.equal(first, attn(x)[0])
    assert outputs == {"diff": True, "gpt": False}
