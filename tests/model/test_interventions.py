"""Interventions on every attention kind: λ (scheduled or learned), streams, heads, undone on exit."""

import pytest
import torch

from prism_lm.errors import PrismError
from prism_lm.model import PrismLM
from prism_lm.model.interventions import intervene
from tests.helpers import ALL_KINDS, tiny_model_config


def _logits(model, idx):
    with torch.no_grad():
        return model(idx).logits


@pytest.mark.parametrize("schedule", ["cosine", "learned"])
def test_zeroing_the_noise_stream_equals_lambda_zero(schedule):
    model = PrismLM(tiny_model_config(prism=dict(lambda_schedule=schedule))).eval()
    model.set_scheduled_lambda(0.3)
    idx = torch.randint(0, 97, (2, 20))
    before = _logits(model, idx)
    with intervene(model, zero_streams=["noise"]):
        silenced = _logits(model, idx)
    with intervene(model, lam=0.0):
        lambda0 = _logits(model, idx)
    torch.testing.assert_close(silenced, lambda0, atol=1e-6, rtol=0)
    assert not torch.allclose(silenced, before)
    torch.testing.assert_close(_logits(model, idx), before, atol=0, rtol=0)  # undone on exit


@pytest.mark.parametrize("kind", ["prism", "diff"])
def test_lambda_is_set_for_learned_lambdas_too(kind):
    model = PrismLM(tiny_model_config(kind, prism=dict(lambda_schedule="learned"))).eval()
    own = model.lambdas()
    with intervene(model, lam=1.0, layers=[1]):
        assert model.lambdas() == [own[0], 1.0]
    assert model.lambdas() == own


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_silencing_every_stream_removes_attention(kind):
    model = PrismLM(tiny_model_config(kind)).eval()
    idx = torch.randint(0, 97, (1, 12))
    streams = model.blocks[0].attn.stream_names
    block = model.blocks[0]
    x = torch.randn(1, 12, 32)
    with intervene(model, zero_streams=streams):
        out, _ = block(x, None)
        silenced = _logits(model, idx)
    # the heads add nothing (a kind whose output projection has a bias, CRATE's, still adds that)
    bias = getattr(getattr(block.attn, "c_proj", None), "bias", None)
    mid = x + (bias if bias is not None else 0)
    code = block.mlp(block.ln_2(mid))
    torch.testing.assert_close(out, mid + code if block.mlp.residual else code)
    assert not torch.allclose(silenced, _logits(model, idx))


def test_zero_and_mean_ablation_of_one_head():
    model = PrismLM(tiny_model_config("gpt")).eval()
    attn, x = model.blocks[1].attn, torch.randn(2, 10, 32)
    captured = {}

    def grab(module, args, output):
        captured["y"] = args[0]

    handle = attn.c_proj.register_forward_hook(grab)
    attn(x)
    y = captured["y"].view(2, 10, 2, 16)  # (B, T, heads, head dim) before the output projection
    with intervene(model, zero_heads=[(1, "main", 0)]):
        attn(x)
    zeroed = captured["y"].view(2, 10, 2, 16)
    assert torch.all(zeroed[:, :, 0] == 0) and torch.allclose(zeroed[:, :, 1], y[:, :, 1])
    with intervene(model, mean_heads=[(1, "main", 1)]):
        attn(x)
    meaned = captured["y"].view(2, 10, 2, 16)
    torch.testing.assert_close(meaned[:, :, 1], y[:, :, 1].mean(dim=(0, 1), keepdim=True).expand(2, 10, 16))
    torch.testing.assert_close(meaned[:, :, 0], y[:, :, 0])
    handle.remove()


def test_diff_heads_are_named_by_stream_and_head():
    model = PrismLM(tiny_model_config("diff")).eval()
    attn = model.blocks[0].attn
    assert [attn.map_index(s, h) for h in range(2) for s in range(2)] == [0, 1, 2, 3]
    idx = torch.randint(0, 97, (1, 12))
    with intervene(model, zero_heads=[(0, "negative", h) for h in range(2)]):
        no_negative = _logits(model, idx)
    with intervene(model, lam=0.0, layers=[0]):
        torch.testing.assert_close(_logits(model, idx), no_negative, atol=1e-6, rtol=0)  # A1 V alone either way


@pytest.mark.parametrize("options, message", [
    ({"zero_streams": ["noize"]}, "no stream 'noize'"),
    ({"zero_heads": [(0, "signal", 5)]}, "head 5 is not a head"),
    ({"mean_heads": [(9, "signal", 0)]}, "layer 9 is not a layer"),
    ({"layers": [4], "lam": 0.0}, "layer 4 is not a layer"),
])
def test_bad_names_are_one_line_errors(options, message):
    with pytest.raises(PrismError, match=message):
        with intervene(PrismLM(tiny_model_config()), **options):
            pass
    with pytest.raises(PrismError, match="gpt attention has no λ"):
        with intervene(PrismLM(tiny_model_config("gpt")), lam=0.0):
            pass


def test_an_exception_inside_still_undoes_the_intervention():
    model = PrismLM(tiny_model_config()).eval()
    with pytest.raises(RuntimeError), intervene(model, zero_streams=["noise"]):
        raise RuntimeError("inside")
    assert all(block.attn.edit is None for block in model.blocks)


def test_nested_interventions_compose_and_unwind_one_at_a_time():
    model = PrismLM(tiny_model_config()).eval()
    model.set_scheduled_lambda(0.3)
    idx = torch.randint(0, 97, (2, 16))
    with intervene(model, zero_streams=["signal", "noise"]):
        nothing = _logits(model, idx)
    with intervene(model, lam=0.0):
        lambda0 = _logits(model, idx)
        with intervene(model, zero_streams=["signal"], layers=[1]):  # adds to λ = 0: layer 1 silent
            assert model.lambdas() == [0.0, 0.0]
            with intervene(model, zero_streams=["signal"], layers=[0]):
                torch.testing.assert_close(_logits(model, idx), nothing, atol=1e-6, rtol=0)
            inner_lambda = _logits(model, idx)
        with intervene(model, lam=1.0, layers=[0]):  # an inner λ wins while it lasts
            assert model.lambdas() == [1.0, 0.0]
        torch.testing.assert_close(_logits(model, idx), lambda0, atol=0, rtol=0)  # the inner ones undone
    assert not torch.allclose(inner_lambda, lambda0)
    assert all(block.attn.edit is None for block in model.blocks)
