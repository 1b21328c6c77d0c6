"""Past the training length: extended RoPE tables, loss per position bucket, and the sink mass on
document-start and mid-document windows."""

import numpy as np
import pytest
import torch

from prism_lm.analysis.heads import sink_by_window_start
from prism_lm.analysis.long_context import position_losses
from prism_lm.data.prepare import prepare
from prism_lm.data.shards import ShardSet
from prism_lm.errors import PrismError
from prism_lm.evaluate import evaluate_split
from prism_lm.model import PrismLM
from tests.helpers import tiny_model_config


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    prepare(["embedded:60"], root / "d", val_fraction=0.0, compact_vocab=True, progress=False)
    return ShardSet(root / "d", "train")


@pytest.mark.parametrize("kind", ["prism", "gpt-rope", "diff"])
def test_a_model_without_wpe_runs_past_its_block_size_and_agrees_where_both_run(kind):
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config(kind, position_embedding="none", block_size=16)).eval()
    idx = torch.randint(0, 97, (2, 64))
    with pytest.raises(ValueError, match="exceeds"):
        model(idx)
    model.extend_positions(64)
    long = model(idx).logits
    torch.testing.assert_close(long[:, :16], model(idx[:, :16]).logits, atol=1e-5, rtol=1e-5)  # causal
    assert model.max_positions == 64
    with pytest.raises(PrismError, match="learned position embedding"):
        PrismLM(tiny_model_config(kind, block_size=16)).extend_positions(64)


def test_position_buckets_average_to_the_whole_window_loss(shards):
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config(vocab_size=shards.vocab_size, position_embedding="none", block_size=32)).eval()
    out = position_losses(model, shards, multiple=4, max_windows=3)
    assert out["context"] == 128 and out["windows"] == 3 and len(out["bucket_loss"]) == 4
    whole = evaluate_split(model, shards, 128, max_windows=3)["loss"]
    assert sum(out["bucket_loss"]) / 4 == pytest.approx(whole, rel=1e-5)
    assert out["excess"] == pytest.approx(out["bucket_loss"][-1] - out["bucket_loss"][0])
    assert 0 < out["sink_first4"] <= 1 and 0 < out["sink_first"] <= out["sink_first4"]
    with pytest.raises(PrismError, match="too few"):
        position_losses(model, shards, multiple=len(shards) // 32 + 1, max_windows=3)


def test_uniform_attention_sinks_by_its_known_amount_on_both_kinds_of_window(shards):
    T = 32
    model = PrismLM(tiny_model_config(vocab_size=shards.vocab_size, block_size=T)).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.u_proj.weight.zero_()  # Q = K = 0: every visible key gets the same weight
    out = sink_by_window_start(model, shards, max_windows=4)
    first = sum(1 / (i + 1) for i in range(1, T)) / (T - 1)
    first4 = sum(4 / (i + 1) for i in range(4, T)) / (T - 4)
    assert out["windows"] == {"doc_start": 4, "mid_doc": 4, "bos": 4}
    for where in ("doc_start", "mid_doc", "bos"):
        for stream in ("signal", "noise"):
            assert out[where][stream]["sink_first"] == pytest.approx(first, rel=1e-5)
            assert out[where][stream]["sink_first4"] == pytest.approx(first4, rel=1e-5)
            assert out[where][stream]["sink_first4_rel"] == pytest.approx(1.0, rel=1e-5)  # uniform: no sink
    tokens = shards.window(0, len(shards))
    eot = shards.codec().eot
    bos_starts = [s - 1 for s in np.flatnonzero(tokens[:-1] == eot) + 1][:4]
    assert all(tokens[s] == eot for s in bos_starts)  # the bos windows open on the separator


def _plant_a_bos_sink(model: PrismLM, eot: int, strength: float = 30.0) -> None:
    """A one-layer GPT whose every head attends to the <|endoftext|> token: a constant query (zero
    query weight, bias 1) and a key that reads how much the input looks like the separator's own
    normalised embedding, so the separator's key scores ``strength`` and any other key about
    ``strength`` times its cosine with it (the separator's embedding scaled up keeps that small)."""
    attn, C = model.blocks[0].attn, model.config.n_embd
    with torch.no_grad():
        model.wte.weight[eot] *= 20
        z0 = model.blocks[0].ln_1(model.wte.weight[eot] + model.wpe.weight[0])
        w, b = attn.c_attn.weight, attn.c_attn.bias
        w[:C].zero_()
        b[:C].fill_(1.0)
        w[C:2 * C] = strength / attn.head_dim ** 0.5 * torch.ones(C, 1) * (z0 / z0.norm() ** 2)[None]  # k·q/√hd
        b[C:2 * C].zero_()


def test_a_planted_sink_is_flagged_on_bos_windows_and_not_elsewhere(shards):
    """C6's measure on a real model with a known sink: a GPT planted to attend to the separator puts
    all its mass on the first position of windows that open on it (first-four mass 3.5x a uniform
    head's, the most a 32-token window allows; the gate asks 2x) and stays below the gate on windows
    that open mid-story; unplanted, the same model reads 1.0 (tested above)."""
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config("gpt", n_layer=1, bias=True, vocab_size=shards.vocab_size)).eval()
    _plant_a_bos_sink(model, shards.codec().eot)
    out = sink_by_window_start(model, shards, max_windows=4)
    bos, mid = out["bos"]["main"], out["mid_doc"]["main"]
    assert bos["sink_first"] > 0.99 and bos["sink_first4_rel"] > 3
    assert mid["sink_first4_rel"] < 2
