import pytest
import torch

from prism_lm.analysis import capture_attention, hook_name
from prism_lm.data.tokenizer import Codec
from prism_lm.model import PrismLM
from tests.helpers import tiny_model_config


def test_three_line_capture_from_text():
    model = PrismLM(tiny_model_config(vocab_size=50304, n_layer=2))
    cache = capture_attention(model, "The frog found a shiny key.")
    A = cache["blocks.1.attn.hook_pattern"]
    n = len(Codec().encode("The frog found a shiny key."))
    assert A.shape == (1, 4, n, n)
    assert cache.stream_of_head(1) == ["signal", "signal", "noise", "noise"]
    torch.testing.assert_close(cache.stream(1, "noise"), A[:, 2:])
    torch.testing.assert_close(A.sum(-1), torch.ones(1, 4, n))
    assert list(cache.keys()) == [hook_name(0), hook_name(1)]


def test_capture_matches_model_logits_and_keeps_training_mode():
    model = PrismLM(tiny_model_config("diff"))
    model.train()
    idx = torch.randint(0, 97, (2, 9))
    cache = capture_attention(model, idx)
    assert model.training
    model.eval()
    torch.testing.assert_close(cache.logits, model(idx).logits, atol=1e-5, rtol=1e-5)
    assert cache.streams[0] == ("positive", "negative")


def test_text_goes_through_the_checkpoints_own_codec_and_refusals_name_a_close_form(tmp_path):
    from prism_lm.checkpoint import load_model, save_model
    from prism_lm.data.prepare import prepare
    from prism_lm.data.shards import ShardSet
    from prism_lm.errors import PrismError
    from prism_lm.model import PrismLM
    from tests.helpers import tiny_model_config

    prepare(["embedded:40"], tmp_path / "d", val_fraction=0.0, compact_vocab=True, progress=False)
    codec = ShardSet(tmp_path / "d", "train").codec()
    save_model(PrismLM(tiny_model_config(vocab_size=codec.vocab_size, block_size=64)), tmp_path / "ck", codec=codec)
    model = load_model(tmp_path / "ck")
    shards = ShardSet(tmp_path / "d", "train")
    text = codec.decode(shards.window(1, 12))
    cache = capture_attention(model, text)  # compact ids, not GPT-2's
    assert cache.tokens.tolist()[0] == codec.encode(text)
    with pytest.raises(PrismError, match="not GPT-2's"):
        capture_attention(PrismLM(tiny_model_config(vocab_size=codec.vocab_size)), "The frog")
    from prism_lm.data.tokenizer import gpt2_encoding

    enc = gpt2_encoding()
    spaced = [enc.decode([g]) for g in codec.token_map if g < 50257 and enc.decode([g]).startswith(" ")]
    word = next(w.strip() for w in spaced if w.strip().isalpha() and len(enc.encode_ordinary(w.strip())) == 1
                and enc.encode_ordinary(w.strip())[0] not in codec.token_map)
    with pytest.raises(PrismError, match=f"'{word}'; ' {word}' is in it"):
        codec.encode(word)  # refused, naming the form with the leading space
