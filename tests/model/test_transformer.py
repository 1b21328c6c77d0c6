"""The language model: shapes, loss, parameter counts, and KV-cache generation."""

import pytest
import torch
import torch.nn.functional as F

from prism_lm.config import ModelConfig
from prism_lm.model import PrismLM, generate, sample_next
from prism_lm.model.generate import new_kv_caches
from tests.helpers import ALL_KINDS, tiny_model_config


def expected_prism_params(L, H, C, R, V):
    D = C // H * R
    per_layer = 2 * C + 2 * H * D * C + 8 * C * C  # two LayerNorm weights, U, MLP (no bias)
    return V * C + L * per_layer + C  # tied embedding, final LayerNorm


def test_paper_config_parameter_counts():
    cfg = ModelConfig()  # the paper's PRISM
    with torch.device("meta"):
        prism = PrismLM(cfg)
        gpt = PrismLM(ModelConfig(attention="gpt"))
        diff = PrismLM(ModelConfig(attention="diff", n_head=4))
    assert prism.num_params() == expected_prism_params(8, 8, 512, 2, 50304) == 50_930_176
    assert round(prism.num_params() / 1e6, 2) == 50.93
    assert prism.num_params(exclude_position_embedding=False) == 50_930_176 + 512 * 512
    assert gpt.num_params() == prism.num_params()
    assert abs(diff.num_params() - prism.num_params()) / prism.num_params() < 1e-4


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_logits_and_loss(kind):
    model = PrismLM(tiny_model_config(kind))
    idx = torch.randint(0, 97, (2, 16))
    logits = model(idx).logits
    assert logits.shape == (2, 16, 97)
    targets = torch.randint(0, 97, (2, 16))
    targets[0, :4] = -1
    logits2, loss = model(idx, targets)
    model.eval()
    expected = F.cross_entropy(model(idx).logits.view(-1, 97), targets.view(-1), ignore_index=-1)
    torch.testing.assert_close(model(idx, targets)[1], expected)
    assert logits2.shape == logits.shape and loss.ndim == 0


def test_tied_embedding_and_init_scales():
    model = PrismLM(ModelConfig(n_layer=4, n_head=4, n_embd=128, vocab_size=1000, block_size=64))
    assert model.lm_head.weight is model.wte.weight
    std = model.blocks[0].mlp.c_proj.weight.std().item()
    assert abs(std - 0.02 / (2 * 4) ** 0.5) < 0.002
    assert abs(model.blocks[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002


def test_too_long_sequence_is_an_error():
    model = PrismLM(tiny_model_config(block_size=8))
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_cached_greedy_equals_uncached(kind):
    """Dynamic cache, static cache and recomputation decode the same tokens."""
    model = PrismLM(tiny_model_config(kind, block_size=40)).eval()
    model.set_scheduled_lambda(0.2)
    prompt = torch.randint(0, 97, (3, 5))
    cached = generate(model, prompt, 30, temperature=0)
    uncached = generate(model, prompt, 30, temperature=0, use_cache=False)
    static = generate(model, prompt, 30, temperature=0, static_cache=True)
    assert cached.shape == (3, 35)
    assert torch.equal(cached, uncached) and torch.equal(static, uncached)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_static_cache_steps_match_full_forward_on_both_paths(kind):
    """Fixed-shape steps over the whole buffer, masked, give the full forward's logits (fast and eager)."""
    model = PrismLM(tiny_model_config(kind)).eval()
    idx = torch.randint(0, 97, (2, 12))
    full = model(idx).logits
    for eager in (False, True):
        caches = new_kv_caches(model, 16, static=True)
        steps = [model.lm_head(model.hidden_states(idx[:, :5], caches, positions=torch.arange(5), eager=eager)[0])]
        for t in range(5, 12):
            steps.append(model.decode_step(idx[:, t:t + 1], torch.tensor([t]), caches, eager=eager)[:, None])
        assert caches[0].k.shape[2] == 16  # the buffer never grows or shrinks
        torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="explicit positions"):
        model.decode_step(idx[:, :1], caches=caches)


def test_generation_past_block_size_matches_uncached():
    model = PrismLM(tiny_model_config(block_size=12)).eval()
    prompt = torch.randint(0, 97, (2, 4))
    assert torch.equal(generate(model, prompt, 20, temperature=0),
                       generate(model, prompt, 20, temperature=0, use_cache=False))


def test_cache_logits_match_full_forward():
    model = PrismLM(tiny_model_config("prism")).eval()
    idx = torch.randint(0, 97, (2, 12))
    full = model(idx).logits
    caches = new_kv_caches(model, 12)
    x, _ = model.hidden_states(idx[:, :7], caches)
    steps = [model.lm_head(x)]
    for t in range(7, 12):
        x, _ = model.hidden_states(idx[:, t:t + 1], caches)
        steps.append(model.lm_head(x))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_stop_token_ends_rows():
    model = PrismLM(tiny_model_config()).eval()
    prompt = torch.randint(0, 97, (2, 3))
    greedy = generate(model, prompt, 6, temperature=0)
    stop = int(greedy[0, 3])  # the first token row 0 will emit
    out = generate(model, prompt, 6, temperature=0, stop_token=stop)
    assert out[0, 3] == stop
    assert torch.all(out[0, 3:] == stop)


def test_sampling_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, 1.0, 2, None, g)) for _ in range(200)}
    assert draws == {3, 4}
    draws = {int(sample_next(logits, 1.0, None, 0.5, g)) for _ in range(200)}
    assert draws == {4}  # p(4)=0.64 > 0.5: only the top token survives
    assert int(sample_next(logits, 0.0, None, None)) == 4
    wide = {int(sample_next(logits, 1.0, None, 0.9, g)) for _ in range(300)}
    assert wide == {2, 3, 4}  # 0.64 + 0.24 = 0.88 < 0.9 -> the third token is needed


def test_sampling_is_reproducible_with_generator():
    model = PrismLM(tiny_model_config()).eval()
    prompt = torch.randint(0, 97, (1, 4))
    a = generate(model, prompt, 10, temperature=1.0, generator=torch.Generator().manual_seed(3))
    b = generate(model, prompt, 10, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.slow
def test_compiled_static_decode_step_equals_eager():
    model = PrismLM(tiny_model_config(block_size=40)).eval()
    prompt = torch.randint(0, 97, (2, 5))
    step = torch.compile(model.decode_step, fullgraph=True)
    compiled = generate(model, prompt, 20, temperature=0, static_cache=True, decode_step=step)
    assert torch.equal(compiled, generate(model, prompt, 20, temperature=0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_decoding_equals_dynamic_cache():
    model = PrismLM(tiny_model_config(block_size=64)).cuda().eval()
    prompt = torch.randint(0, 97, (2, 5), device="cuda")
    step = torch.compile(model.decode_step, mode="reduce-overhead", fullgraph=True)
    graphed = generate(model, prompt, 40, temperature=0, static_cache=True, decode_step=step)
    assert torch.equal(graphed, generate(model, prompt, 40, temperature=0))
