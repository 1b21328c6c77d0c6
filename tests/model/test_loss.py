import pytest
import torch
import torch.nn.functional as F

from prism_lm.model import PrismLM
from prism_lm.model.loss import chunked_linear_cross_entropy
from tests.helpers import tiny_model_config


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_loss_and_gradients_equal_the_plain_head(chunk):
    h = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(40, 16, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 40, (50,))
    t[[3, 17, 49]] = -1  # ignored positions count in neither the sum nor the mean
    plain = F.cross_entropy(h @ w.t(), t, ignore_index=-1)
    gh, gw = torch.autograd.grad(plain * 3.0, (h, w))
    loss = chunked_linear_cross_entropy(h, w, t, chunk)
    ch, cw = torch.autograd.grad(loss * 3.0, (h, w))
    torch.testing.assert_close(loss, plain.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ch, gh)
    torch.testing.assert_close(cw, gw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_accumulate_over_repeated_backwards_of_a_kept_graph(dtype):
    """.grad must be 1x, 2x, 3x over backwards of a kept graph (the weight used twice too): returning
    the saved gradients themselves for a unit loss gradient fails this (autograd adds into them)."""
    torch.manual_seed(0)
    h = torch.randn(30, 8, dtype=dtype, requires_grad=True)
    w = torch.randn(20, 8, dtype=dtype, requires_grad=True)
    t = torch.randint(0, 20, (30,))
    gh, gw = torch.autograd.grad(F.cross_entropy(h @ w.t(), t) + w.sum(), (h, w))
    loss = chunked_linear_cross_entropy(h, w, t, 7) + w.sum()
    for times in (1, 2, 3):
        loss.backward(retain_graph=True)
        torch.testing.assert_close(h.grad, times * gh, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(w.grad, times * gw, rtol=1e-5, atol=1e-6)


def test_chunked_loss_without_gradients_and_bad_chunk():
    h, w, t = torch.randn(9, 4), torch.randn(5, 4, requires_grad=True), torch.randint(0, 5, (9,))
    with torch.no_grad():
        got = chunked_linear_cross_entropy(h, w, t, 4)
    assert not got.requires_grad
    torch.testing.assert_close(got, F.cross_entropy(h @ w.t(), t))
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_linear_cross_entropy(h, w, t, 0)


def test_model_with_chunked_loss_trains_the_same_tied_weights():
    model = PrismLM(tiny_model_config(dropout=0.0))
    idx, tgt = torch.randint(0, 97, (3, 20)), torch.randint(0, 97, (3, 20))
    logits, plain = model(idx, tgt)
    plain.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    none, chunked = model(idx, tgt, loss_chunk=16)
    chunked.backward()
    assert none is None and logits.shape == (3, 20, 97)
    torch.testing.assert_close(chunked, plain)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-5, atol=1e-6, msg=n)


@pytest.mark.slow
def test_chunked_loss_under_torch_compile():
    """The paper configs turn the chunked loss on and may compile: both together give the eager numbers."""
    model = PrismLM(tiny_model_config(dropout=0.0))
    reference = PrismLM(tiny_model_config(dropout=0.0))
    reference.load_state_dict(model.state_dict())
    idx, tgt = torch.randint(0, 97, (3, 20)), torch.randint(0, 97, (3, 20))
    _, loss = torch.compile(model)(idx, tgt, loss_chunk=16)
    loss.backward()
    _, expected = reference(idx, tgt)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
