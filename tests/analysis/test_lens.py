"""TransformerLens's own tools on hooked prism-lm models (issue 35): its config, per-head results,
LayerNorm scales, weights, decompositions checked against the logits, activation patching, text
methods and return types, on PRISM, GPT-RoPE and DIFF."""

import pytest
import torch

from prism_lm.data.tokenizer import EOT_ID, Codec, encode
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM
from tests.helpers import tiny_model_config

pytest.importorskip("transformer_lens")
import transformer_lens.patching as patching  # noqa: E402

from prism_lm.analysis.hooked import hooked  # noqa: E402

KINDS = ["prism", "gpt-rope", "diff"]
TEXT = " the cat saw the dog and the dog saw the cat"


# PRISM in the default suite; the other kinds in the slow one (.ci/run runs both)
@pytest.fixture(scope="module", params=[KINDS[0], *(pytest.param(k, marks=pytest.mark.slow) for k in KINDS[1:])])
def run(request):
    """A hooked tiny model of each kind (λ not at its tiny start value), a batch and its full cache."""
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config(request.param, bias=True)).eval()
    with torch.no_grad():  # LayerNorm weights and biases away from 1 and 0, so folding them matters
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    model.set_scheduled_lambda(0.6)
    idx = torch.randint(0, 97, (2, 16))
    expected = model(idx).logits
    h = hooked(model)
    logits, cache = h.run_with_cache(idx)
    return request.param, model, h, idx, expected, logits, cache


def test_the_config_is_transformer_lens_own_and_counts_the_maps_with_an_output(run):
    kind, model, h, *_ = run
    from transformer_lens.config import TransformerBridgeConfig

    assert isinstance(h.cfg, TransformerBridgeConfig)
    maps = {"prism": 2 * model.config.n_head, "gpt-rope": model.config.n_head, "diff": 2 * model.config.n_head}
    assert (h.cfg.n_layers, h.cfg.d_model, h.cfg.n_heads) == (2, 32, maps[kind])
    assert h.cfg.d_vocab == 97 and h.cfg.normalization_type == "LN" and not h.training


def test_head_results_sum_to_the_attention_output_and_the_logits_are_unchanged(run):
    kind, model, h, idx, expected, logits, cache = run
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    for layer in range(2):
        result = cache[f"blocks.{layer}.attn.hook_result"]
        assert result.shape == (2, 16, h.cfg.n_heads, 32)
        torch.testing.assert_close(result.sum(2) + h.b_O[layer], cache[f"blocks.{layer}.hook_attn_out"],
                                   atol=1e-5, rtol=1e-5)
        if kind != "diff":  # DIFF's W_O leaves out the RMSNorm's input-dependent division (documented)
            z = cache[f"blocks.{layer}.attn.hook_z"]
            torch.testing.assert_close(torch.einsum("bthd,hdc->bthc", z, h.W_O[layer]), result, atol=1e-5, rtol=1e-5)


def test_the_noise_stream_result_carries_minus_lambda():
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config()).eval()
    model.set_scheduled_lambda(0.6)
    h = hooked(model)
    idx = torch.randint(0, 97, (1, 12))
    _, cache = h.run_with_cache(idx, names_filter=["blocks.1.attn.hook_z_noise", "blocks.1.attn.hook_result_noise"])
    attn = model.blocks[1].attn
    H, D = attn.n_head, attn.head_dim
    u_noise = attn.u_proj.weight[H * D:].view(H, D, -1)  # (H, D, C): each noise head's atoms
    predicted = -0.6 * attn.output_scale * torch.einsum("bthd,hdc->bthc", cache["blocks.1.attn.hook_z_noise"], u_noise)
    torch.testing.assert_close(cache["blocks.1.attn.hook_result_noise"], predicted, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(h.W_Q[1, H:], u_noise.transpose(1, 2))  # W_Q = W_K = W_V = U_h
    torch.testing.assert_close(h.W_O[1, H:], -0.6 * attn.output_scale * u_noise)  # W_O = −λ U_hᵀ (scaled)


def test_layer_norm_scales_have_transformer_lens_names_and_values(run):
    _, model, h, idx, expected, logits, cache = run
    resid = cache["blocks.1.hook_resid_post"]
    centred = resid - resid.mean(-1, keepdim=True)
    torch.testing.assert_close(cache["ln_final.hook_scale"], (centred.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt())
    torch.testing.assert_close(cache["ln_final.hook_normalized"] @ h.W_U, expected, atol=1e-5, rtol=1e-5)
    assert cache["blocks.0.ln1.hook_scale"].shape == (2, 16, 1) and "blocks.1.ln2.hook_normalized" in cache.cache_dict
    assert "blocks.0.ln_1.hook_scale" not in h.hook_dict and "blocks.0.mlp.hook_post" in h.hook_dict


def test_decompositions_add_up_to_the_residual_and_logit_attributions_to_the_logits(run):
    _, model, h, idx, expected, logits, cache = run
    final = cache["blocks.1.hook_resid_post"]
    for stack in (cache.decompose_resid(), cache.get_full_resid_decomposition(expand_neurons=False),
                  cache.get_full_resid_decomposition(expand_neurons=True)):
        torch.testing.assert_close(stack.sum(0), final, atol=1e-5, rtol=1e-5)
    heads, labels = cache.stack_head_results(return_labels=True, incl_remainder=True)
    torch.testing.assert_close(heads.sum(0), final, atol=1e-5, rtol=1e-5)
    assert labels[: h.cfg.n_heads + 1] == [f"L0H{i}" for i in range(h.cfg.n_heads)] + ["L1H0"]
    words = {"prism": ["L0 signal 0", "L0 signal 1", "L0 noise 0", "L0 noise 1"],
             "gpt-rope": ["L0 main 0", "L0 main 1"],
             "diff": ["L0 positive 0", "L0 negative 0", "L0 positive 1", "L0 negative 1"]}[run[0]]
    assert h.head_labels()[: len(words)] == words and len(h.head_labels()) == len(labels) - 1
    targets = torch.roll(idx, -1, dims=1)
    attributions = cache.logit_attrs(cache.decompose_resid(), tokens=targets)  # (components, B, T)
    torch.testing.assert_close(attributions.sum(0) + h.b_U[targets], expected.gather(-1, targets[..., None])[..., 0],
                               atol=1e-4, rtol=1e-4)
    accumulated = cache.accumulated_resid(apply_ln=True)  # the last entry is the final LayerNorm's input, normalized
    torch.testing.assert_close(accumulated[-1], cache["ln_final.hook_normalized"], atol=1e-5, rtol=1e-5)
    scaled = cache.apply_ln_to_stack(final[None])[0]
    torch.testing.assert_close(scaled * model.ln_f.weight + model.ln_f.bias, cache["ln_final.hook_normalized"],
                               atol=1e-5, rtol=1e-5)


def test_patching_restores_exactly_what_it_should(run):
    """Clean and corrupted prompts differ at one position p: patching layer 0's resid_pre there restores
    the clean metric, patching anywhere else leaves the corrupted one; and TransformerLens's head index
    is the wrapper's stream order (PRISM's heads H.. are its noise heads)."""
    kind, model, h, idx, expected, logits, cache = run
    clean = idx[:1]
    corrupted, p = clean.clone(), 9
    corrupted[0, p] = (corrupted[0, p] + 1) % 97
    _, clean_cache = h.run_with_cache(clean)

    def metric(out):
        return out[0, -1, 3] - out[0, -1, 5]

    result = patching.get_act_patch_resid_pre(h, corrupted, clean_cache, metric)
    assert result.shape == (2, 16)
    torch.testing.assert_close(result[0, p], metric(h(clean)), atol=1e-5, rtol=1e-5)
    others = torch.cat([result[0, :p], result[0, p + 1:]])
    torch.testing.assert_close(others, metric(h(corrupted)).expand_as(others), atol=1e-5, rtol=1e-5)
    heads = patching.get_act_patch_attn_head_out_all_pos(h, corrupted, clean_cache, metric)
    assert heads.shape == (2, h.cfg.n_heads)
    if kind == "prism":
        H = model.config.n_head
        by_stream = h.run_with_hooks(corrupted, fwd_hooks=[(
            "blocks.1.attn.hook_z_noise",
            lambda z, hook: torch.cat([clean_cache["blocks.1.attn.hook_z"][:, :, H:H + 1], z[:, :, 1:]], dim=2))])
        torch.testing.assert_close(heads[1, H], metric(by_stream), atol=1e-5, rtol=1e-5)


def test_return_types_are_transformer_lens_and_a_wrong_one_is_refused(run):
    _, model, h, idx, expected, *_ = run
    want = torch.nn.functional.cross_entropy(expected[:, :-1].flatten(0, 1), idx[:, 1:].flatten())
    torch.testing.assert_close(h(idx, return_type="loss"), want, atol=1e-5, rtol=1e-5)
    logits, per_token = h(idx, return_type="both", loss_per_token=True)
    assert per_token.shape == (2, 15) and h(idx, return_type=None) is None
    torch.testing.assert_close(per_token.mean(), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(PrismError, match="return_type must be one of"):
        h(idx, return_type="probs")


def test_text_methods_go_through_the_checkpoint_codec():
    codec = Codec(sorted(set(encode(TEXT)) | {EOT_ID}))
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config(vocab_size=codec.vocab_size)).eval()
    h = hooked(model, codec)
    tokens = h.to_tokens(TEXT)
    assert tokens.tolist() == [codec.encode(TEXT)] and h.to_string(tokens[0]) == TEXT
    assert h.to_tokens(TEXT, prepend_bos=True)[0, 0] == codec.eot
    assert "".join(h.to_str_tokens(TEXT)) == TEXT and h.to_str_tokens(TEXT)[1] == " cat"
    assert h.to_single_token(" dog") == codec.encode(" dog")[0]
    with pytest.raises(PrismError, match="2 tokens, not one"):
        h.to_single_token(" the cat")
    torch.testing.assert_close(h(TEXT), model(tokens).logits)  # text in, as TransformerLens takes it
    out = h.generate(" the cat", max_new_tokens=4, temperature=0.0, stop_at_eos=False)
    assert isinstance(out, str) and out.startswith(" the cat") and len(h.to_tokens(out)[0]) == 6
    assert h.generate(h.to_tokens(" the cat"), max_new_tokens=2, temperature=0.0, stop_at_eos=False).shape == (1, 4)
    assert h.tokens_to_residual_directions(" dog").shape == (32,)
    with pytest.raises(PrismError, match="different token lengths"):
        h.to_tokens([" the cat", " the dog and"])
