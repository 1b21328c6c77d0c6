"""The CPU dropout mask and the CPU training attention: the distribution they claim, the same
function as the plain expressions, and the paths the model takes."""

import math

import pytest
import torch

from prism_lm.model import PrismLM
from prism_lm.model.attention import common as attention_module
from prism_lm.model.attention import cpu_training_attention
from prism_lm.model.dropout import FIELD_LEVELS, Dropout, drop_threshold, dropout, keep_mask
from tests.helpers import ALL_KINDS, tiny_model_config

N = 1 << 20


def test_threshold_gives_the_rate_to_sixteen_bits():
    assert drop_threshold(0.1) == 6554 and drop_threshold(0.0) == 0
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="dropout probability"):
            drop_threshold(bad)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_mask_drops_at_its_rate_in_every_field_of_a_word_and_keeps_the_mean(p):
    """Each of the four 16-bit fields of a random word must drop at p' (a field with a fixed bit, as
    from a 63-bit draw, would not), neighbours independently, and the mean of the mask must be 1."""
    torch.manual_seed(0)
    mask = keep_mask((N,), p)
    p_eff = drop_threshold(p) / FIELD_LEVELS
    scale = 1.0 / (1.0 - p_eff)
    values = mask.unique()
    assert values[0].item() == 0.0 and values[1].item() == pytest.approx(scale) and len(values) == 2
    dropped = mask == 0
    bound = 5 * math.sqrt(p_eff * (1 - p_eff) / (N // 4))
    for field in range(4):
        assert abs(dropped.view(-1, 4)[:, field].float().mean().item() - p_eff) < bound
    both = (dropped[:-1] & dropped[1:]).float().mean().item()
    assert abs(both - p_eff**2) < 5 * math.sqrt(p_eff**2 / N)
    assert abs(mask.mean().item() - 1.0) < 5 * scale * math.sqrt(p_eff * (1 - p_eff) / N)


def test_mask_repeats_with_the_seed_and_takes_any_shape():
    torch.manual_seed(3)
    first = keep_mask((3, 5, 7), 0.2)
    torch.manual_seed(3)
    assert first.shape == (3, 5, 7) and torch.equal(first, keep_mask((3, 5, 7), 0.2))
    assert keep_mask((2, 3), 0.3, torch.float64).dtype == torch.float64
    assert torch.all(keep_mask((4, 4), 0.0) == 1.0)


def test_dropout_module_is_identity_in_eval_and_masks_in_training():
    x = torch.randn(64, 64)
    layer = Dropout(0.25)
    assert layer.eval()(x) is x and dropout(x, 0.0) is x
    out = layer.train()(x)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] / (1 - drop_threshold(0.25) / FIELD_LEVELS))
    assert 0.15 < 1 - kept.float().mean().item() < 0.35
    with pytest.raises(ValueError):
        Dropout(1.0)


def _reference_attention(q, k, v, mask):
    T = q.size(-2)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return (scores.softmax(-1) * mask) @ v


@pytest.mark.parametrize("shared", [True, False])
def test_cpu_training_attention_is_the_plain_expression_with_the_same_mask(shared):
    """Forward and every gradient, in fp64, against autograd through the textbook expression with the
    mask drawn from the same seed; ``shared`` (k is q) exercises the one-product backward."""
    torch.manual_seed(0)
    B, H, T, D = 2, 3, 11, 8
    q = torch.randn(B, H, T, D, dtype=torch.float64, requires_grad=True)
    k = q if shared else torch.randn(B, H, T, D, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, H, T, 5, dtype=torch.float64, requires_grad=True)
    inputs = (q, v) if shared else (q, k, v)
    torch.manual_seed(1)
    out = cpu_training_attention(q, k, v, 0.3)
    torch.manual_seed(1)
    mask = keep_mask((B * H, T, T), 0.3, torch.float64).view(B, H, T, T)
    expected = _reference_attention(q, k, v, mask)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
    grad = torch.randn_like(out)
    for ours, theirs in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(expected, inputs, grad),
                            strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=1e-12)


def test_cpu_training_attention_keeps_a_half_precision_dtype():
    q = torch.randn(1, 2, 6, 4, dtype=torch.bfloat16)
    assert cpu_training_attention(q, q, q, 0.1).dtype == torch.bfloat16


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_training_step_on_the_fast_path_equals_the_eager_path(kind):
    """With dropout on, the fast path (cpu_training_attention, or SDPA for kinds without attention
    dropout) and the eager path draw the same masks in the same order: same loss, same gradients."""
    model = PrismLM(tiny_model_config(kind, dropout=0.2)).train()
    idx = torch.randint(0, 97, (2, 16))
    results = []
    for eager in (False, True):
        model.zero_grad()
        torch.manual_seed(5)
        loss = model(idx, idx, eager=eager).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=1e-6)
    for fast, eager in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(fast, eager, atol=1e-5, rtol=1e-4)


def test_prism_attention_takes_the_shared_key_backward_and_hooks_turn_it_off(monkeypatch):
    calls = []
    original = attention_module._SharedKeyScores.apply
    monkeypatch.setattr(attention_module._SharedKeyScores, "apply", lambda *a: calls.append(1) or original(*a))
    attn = PrismLM(tiny_model_config("prism", dropout=0.1)).blocks[0].attn.train()
    x = torch.randn(2, 8, attn.u_proj.in_features)
    attn(x)
    assert calls == [1]
    attn.hook_k = torch.nn.Module()  # a hook site that is not an identity (as TransformerLens's HookPoint)
    attn.hook_k.forward = lambda t: t
    attn(x)
    assert calls == [1]
