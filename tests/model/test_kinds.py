"""The model's kinds beyond attention: the MLP registry and the position-embedding option."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prism_lm.checkpoint import load_model, save_model
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM, generate
from prism_lm.model.mlp import MLP_KINDS, GeluMLP, MLPKind
from prism_lm.train.metrics import flops_per_token
from tests.helpers import tiny_model_config


class _Replacing(MLPKind):
    """A test kind that replaces the residual stream, as CRATE's ISTA block does."""

    name = "test-replacing"
    residual = False

    @classmethod
    def matmuls(cls, cfg):
        return [(cfg.n_embd, cfg.n_embd)] * 3

    @classmethod
    def check_config(cls, cfg):
        if cfg.bias:
            raise PrismError("test-replacing takes no bias")

    def __init__(self, cfg, layer_idx):
        super().__init__()
        self.dictionary = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.was_reset = False

    def reset_parameters(self):
        nn.init.eye_(self.dictionary.weight)
        self.was_reset = True

    def forward(self, x):
        return F.relu(self.dictionary(x))


@pytest.fixture
def replacing_kind(monkeypatch):
    monkeypatch.setitem(MLP_KINDS, _Replacing.name, _Replacing)
    return _Replacing.name


def test_unknown_mlp_kind_is_a_one_line_error():
    with pytest.raises(PrismError, match="model.mlp must be one of"):
        PrismLM(tiny_model_config(mlp="swiglu"))


def test_gelu_is_the_default_kind_and_adds_to_the_stream():
    model = PrismLM(tiny_model_config())
    assert isinstance(model.blocks[0].mlp, GeluMLP) and GeluMLP.residual
    block, x = model.blocks[0], torch.randn(2, 8, 32)
    a, _ = block.attn(block.ln_1(x), None)
    out, _ = block(x, None)
    torch.testing.assert_close(out, x + a + block.mlp(block.ln_2(x + a)))


def test_a_kind_that_replaces_the_stream_is_wired_and_initialised_as_it_declares(replacing_kind):
    model = PrismLM(tiny_model_config(mlp=replacing_kind))
    block, x = model.blocks[1], torch.randn(2, 8, 32)
    assert block.mlp.was_reset and torch.equal(block.mlp.dictionary.weight, torch.eye(32))  # its own init ran last
    a, _ = block.attn(block.ln_1(x), None)
    out, _ = block(x, None)
    torch.testing.assert_close(out, F.relu(block.ln_2(x + a)))  # no "x +": the stream is replaced
    with pytest.raises(PrismError, match="no bias"):
        PrismLM(tiny_model_config(mlp=replacing_kind, bias=True))  # the kind's own check


def test_flops_count_each_mlp_kind_from_its_matmuls(replacing_kind):
    gelu, other = tiny_model_config(), tiny_model_config(mlp=replacing_kind)
    per_layer_gelu = 2 * (32 * 128 + 128 * 32)
    per_layer_other = 3 * 2 * 32 * 32
    assert flops_per_token(gelu, 32) - flops_per_token(other, 32) == 3 * 2 * (per_layer_gelu - per_layer_other)


def test_no_position_embedding_is_refused_without_rope():
    for kind in ("gpt",):
        with pytest.raises(PrismError, match="no position information"):
            PrismLM(tiny_model_config(kind, position_embedding="none"))
    with pytest.raises(PrismError, match="position_embedding must be one of"):
        PrismLM(tiny_model_config(position_embedding="sinusoidal"))


@pytest.mark.parametrize("kind", ["prism", "gpt-rope", "diff"])
def test_no_position_embedding_drops_wpe_and_still_sees_order(kind, tmp_path):
    model = PrismLM(tiny_model_config(kind, position_embedding="none")).eval()
    learned = PrismLM(tiny_model_config(kind))
    assert model.wpe is None and "wpe.weight" not in model.state_dict()
    assert model.num_params() == learned.num_params()  # wpe was never counted
    assert model.num_params(exclude_position_embedding=False) == learned.num_params()
    idx = torch.randint(0, 97, (1, 12))
    logits = model(idx).logits
    # RoPE alone carries the order: the last position's logits change when earlier tokens swap places
    swapped = idx.clone()
    swapped[0, [2, 7]] = idx[0, [7, 2]]
    assert not torch.allclose(model(swapped).logits[0, -1], logits[0, -1])
    cached = generate(model, idx, 6, temperature=0)
    assert torch.equal(cached, generate(model, idx, 6, temperature=0, use_cache=False))
    reloaded = load_model(save_model(model, tmp_path / "ckpt"))
    torch.testing.assert_close(reloaded(idx).logits, logits)


def test_gpt_output_scale_scales_the_attention_output_and_only_gpt_takes_it():
    """[model.gpt] output_scale multiplies GPT's attention output (PRISM's 1/sqrt(2HR) as a control);
    the same weights at scale s give s times the attention output; other kinds refuse the knob."""
    import pytest
    import torch

    from prism_lm.errors import PrismError
    from prism_lm.model import PrismLM
    from prism_lm.model.config import ModelConfig, flat_legacy_dict
    from tests.helpers import tiny_model_config

    torch.manual_seed(0)
    plain = PrismLM(tiny_model_config("gpt-rope")).eval()
    scaled = PrismLM(tiny_model_config("gpt-rope", gpt={"output_scale": 0.25})).eval()
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(2, 8, 32)
    torch.testing.assert_close(scaled.blocks[0].attn(x)[0], 0.25 * plain.blocks[0].attn(x)[0])
    assert flat_legacy_dict(scaled.config)["gpt_output_scale"] == 0.25  # hashed into sweep identities
    assert ModelConfig.from_json({"attention": "gpt"}).gpt.output_scale == 1.0  # old configs: nanoGPT's
    with pytest.raises(PrismError, match="model.gpt.output_scale applies to GPT's attention"):
        PrismLM(tiny_model_config("prism", gpt={"output_scale": 0.25}))
    with pytest.raises(PrismError, match="finite number > 0"):
        PrismLM(tiny_model_config("gpt", gpt={"output_scale": 0.0}))
