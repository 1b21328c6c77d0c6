import torch

from prism_lm.analysis import capture_attention, hook_name
from prism_lm.data.tokenizer import Codec
from prism_lm.model import PrismLM
from tests.conftest import tiny_config


def test_three_line_capture_from_text():
    model = PrismLM(tiny_config(vocab_size=50304, n_layer=2))
    cache = capture_attention(model, "The frog found a shiny key.")
    A = cache["blocks.1.attn.hook_pattern"]
    n = len(Codec().encode("The frog found a shiny key."))
    assert A.shape == (1, 4, n, n)
    assert cache.stream_of_head(1) == ["signal", "signal", "noise", "noise"]
    torch.testing.assert_close(cache.stream(1, "noise"), A[:, 2:])
    torch.testing.assert_close(A.sum(-1), torch.ones(1, 4, n))
    assert list(cache.keys()) == [hook_name(0), hook_name(1)]


def test_capture_matches_model_logits_and_keeps_training_mode():
    model = PrismLM(tiny_config("diff"))
    model.train()
    idx = torch.randint(0, 97, (2, 9))
    cache = capture_attention(model, idx)
    assert model.training
    model.eval()
    torch.testing.assert_close(cache.logits, model(idx).logits, atol=1e-5, rtol=1e-5)
    assert cache.streams[0] == ("positive", "negative")
