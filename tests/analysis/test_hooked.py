"""TransformerLens hooks on prism-lm models: names, shapes, caching, replacement, per-stream names,
and an activation-patching example whose effect is predicted exactly."""

import sys

import pytest
import torch

from prism_lm.analysis.capture import capture_attention, hook_name
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM
from prism_lm.model.interventions import intervene
from tests.helpers import tiny_model_config

pytest.importorskip("transformer_lens")
from prism_lm.analysis.hooked import hooked  # noqa: E402


def test_without_the_extra_the_hook_api_says_which_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformer_lens", None)
    with pytest.raises(PrismError, match=r"prism-lm\[interp\]"):
        hooked(PrismLM(tiny_model_config()))


@pytest.mark.parametrize("kind", ["prism", "gpt", "gpt-rope", "diff"])
def test_the_cache_has_transformer_lens_names_and_matches_the_model(kind):
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config(kind)).eval()
    idx = torch.randint(0, 97, (2, 16))
    expected = model(idx).logits
    maps = capture_attention(model, idx)
    h = hooked(model)
    assert not h.training and not model.training  # eval mode kept (TransformerLens's patching refuses training)
    logits, cache = h.run_with_cache(idx)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    for name in ("hook_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_q", "blocks.0.attn.hook_z",
                 "blocks.1.hook_attn_out", "blocks.1.hook_resid_mid", "blocks.1.hook_mlp_out",
                 "blocks.1.hook_resid_post", "blocks.1.attn.hook_attn_scores"):
        assert name in cache.cache_dict, name
    assert cache["blocks.0.hook_resid_pre"].shape == (2, 16, 32)
    attn = model.blocks[0].attn
    order = [attn.map_index(s, i) for s in range(len(attn.stream_names)) for i in range(attn.n_head)]
    for layer in range(2):  # hook_pattern is the analysis capture's map (which lists maps stream by stream)
        torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_pattern"][:, order], maps[hook_name(layer)],
                                   atol=1e-6, rtol=1e-5)
    final = model.ln_f(cache["blocks.1.hook_resid_post"])
    torch.testing.assert_close(model.lm_head(final), expected, atol=1e-5, rtol=1e-5)


def test_a_hook_may_replace_and_zeroing_the_noise_z_equals_the_stream_intervention():
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config()).eval()
    model.set_scheduled_lambda(0.7)
    idx = torch.randint(0, 97, (2, 16))
    with intervene(model, zero_streams=["noise"]):
        off = model(idx).logits
    h = hooked(model)
    zero = [(f"blocks.{layer}.attn.hook_z_noise", lambda z, hook: torch.zeros_like(z)) for layer in range(2)]
    torch.testing.assert_close(h.run_with_hooks(idx, fwd_hooks=zero), off, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(h(idx), model(idx).logits)  # the hooks are gone afterwards
    with h.hooks(fwd_hooks=zero):  # TransformerLens's hooks() takes the per-stream names too
        torch.testing.assert_close(h(idx), off, atol=1e-6, rtol=1e-6)
    for name, fn in zero:  # and add_hook
        h.add_hook(name, fn)
    torch.testing.assert_close(h(idx), off, atol=1e-6, rtol=1e-6)
    h.reset_hooks()
    torch.testing.assert_close(h(idx), model(idx).logits)
    with pytest.raises(PrismError, match="no hook point"):
        h.run_with_hooks(idx, fwd_hooks=[("blocks.0.attn.hook_nothing", lambda z, hook: z)])


def test_patching_the_noise_stream_from_one_prompt_into_another_moves_the_output_as_predicted():
    """Patch layer 1's noise-stream z from prompt A into prompt B: its attention output must move by
    exactly −λ · scale · Δz_noise · U_noise (W_O = Uᵀ), and the logits move with it."""
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config()).eval()
    lam = 0.5
    model.set_scheduled_lambda(lam)
    a, b = torch.randint(0, 97, (1, 16)), torch.randint(0, 97, (1, 16))
    h = hooked(model)
    _, cache_a = h.run_with_cache(a, names_filter=["blocks.1.attn.hook_z_noise"])
    _, cache_b = h.run_with_cache(b, names_filter=["blocks.1.attn.hook_z_noise", "blocks.1.hook_attn_out"])
    seen = {}

    def save(x, hook):
        seen["attn_out"] = x.detach().clone()

    from_a = cache_a["blocks.1.attn.hook_z_noise"]
    patched = h.run_with_hooks(b, fwd_hooks=[("blocks.1.attn.hook_z_noise", lambda z, hook: from_a),
                                             ("blocks.1.hook_attn_out", save)])
    attn = model.blocks[1].attn
    H, D = attn.n_head, attn.head_dim
    dz = (cache_a["blocks.1.attn.hook_z_noise"] - cache_b["blocks.1.attn.hook_z_noise"]).reshape(1, 16, H * D)
    u_noise = attn.u_proj.weight[H * D:]  # (H*D, C): the noise stream's atoms
    predicted = cache_b["blocks.1.hook_attn_out"] - lam * attn.output_scale * dz @ u_noise
    torch.testing.assert_close(seen["attn_out"], predicted, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(patched, model(b).logits, atol=1e-4)


def test_diff_streams_have_their_own_names_and_shared_values_are_refused():
    model = PrismLM(tiny_model_config("diff")).eval()
    idx = torch.randint(0, 97, (1, 12))
    h = hooked(model)
    names = ["blocks.0.attn.hook_pattern_negative", "blocks.0.attn.hook_pattern"]
    _, cache = h.run_with_cache(idx, names_filter=names)
    attn = model.blocks[0].attn
    negative = [attn.map_index(1, i) for i in range(attn.n_head)]
    torch.testing.assert_close(cache[names[0]], cache[names[1]][:, negative])
    with pytest.raises(PrismError, match="hook_v has no per-stream part"):
        h.run_with_hooks(idx, fwd_hooks=[("blocks.0.attn.hook_v_negative", lambda v, hook: v)])
