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
