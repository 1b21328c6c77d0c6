"""The white-box family: CRATE's ISTA block (``mlp = "ista"``), CRATE's masked MSSA
(``attention = "crate"``), CRATE's LM to 1e-5 of the official file, and its checkpoint import."""

import contextlib
import io
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.anchors import anchors_dir, load_reference
from prism_lm.checkpoint import load_model
from prism_lm.checkpoint.crate import convert_crate_state, crate_config, import_crate
from prism_lm.cli import main
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM, generate
from prism_lm.train.metrics import flops_per_token
from tests.helpers import tiny_model_config

ANCHORS = anchors_dir()
needs_anchors = pytest.mark.skipif(ANCHORS is None, reason="../shared/anchors (reference models) not found")


def official_crate(**fields):
    module = load_reference("crate", ANCHORS)
    with contextlib.redirect_stdout(io.StringIO()):
        return module.CRATE(module.CRATEConfig(**fields))


def shake(model: torch.nn.Module, seed: int = 0) -> None:
    """Move every parameter off its init (LayerNorm ones and zero biases would hide a swapped tensor)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_ista_is_one_proximal_step_of_sparse_coding():
    cfg = tiny_model_config(mlp="ista", ista=dict(step_size=0.3, l1_weight=0.2))
    block = PrismLM(cfg).blocks[0].mlp
    z = torch.randn(2, 5, 32)
    D = block.weight.detach()
    # the LASSO gradient step from a = z on ½‖z − a Dᵀ... written as CRATE's F.linear calls compose:
    # x1 = z Wᵀ, DᵀDz = x1 W, Dᵀz = z W (row vectors), then the nonnegative soft threshold
    expected = torch.clamp(z + 0.3 * (z @ D - z @ D.t() @ D) - 0.3 * 0.2, min=0)
    torch.testing.assert_close(block(z), expected)
    bound = math.sqrt(6 / 32)  # Kaiming-uniform (gain √2, fan_in 32), as CRATE initialises it
    fresh = PrismLM(cfg).blocks[1].mlp.weight
    assert fresh.abs().max() <= bound and fresh.abs().max() > 0.8 * bound
    out = block(z)
    assert (out == 0).float().mean() > 0.05  # a sparse code: the threshold zeroes entries


@pytest.mark.parametrize("mode, adds", [("replace", False), ("residual", True)])
def test_ista_mode_replaces_or_adds_to_the_stream(mode, adds):
    model = PrismLM(tiny_model_config(mlp="ista", ista=dict(mode=mode)))
    block, x = model.blocks[0], torch.randn(2, 8, 32)
    a, _ = block.attn(block.ln_1(x), None)
    mid = x + a
    out, _ = block(x, None)
    code = block.mlp(block.ln_2(mid))
    torch.testing.assert_close(out, mid + code if adds else code)


def test_ista_config_errors_are_one_line():
    with pytest.raises(PrismError, match="model.ista.mode must be one of"):
        PrismLM(tiny_model_config(mlp="ista", ista=dict(mode="both")))
    with pytest.raises(PrismError, match="model.ista.l1_weight must be a finite number >= 0"):
        PrismLM(tiny_model_config(mlp="ista", ista=dict(l1_weight=-1.0)))


@pytest.mark.parametrize("attention, mlp", [("crate", "ista"), ("prism", "ista"), ("crate", "gelu")])
def test_flops_are_the_matmuls_torch_counts(attention, mlp):
    cfg = tiny_model_config(attention, mlp=mlp, bias=True, final_norm=False, dropout=0.0)
    model = PrismLM(cfg)
    T = 16
    idx = torch.randint(0, cfg.vocab_size, (1, T))
    with FlopCounterMode(display=False) as counter:
        model(idx, idx, eager=True).loss.backward()  # eager: QK^T and AV as the matmuls they are
    assert counter.get_total_flops() / T == pytest.approx(flops_per_token(cfg, T), rel=1e-6)


def test_the_crate_kind_is_masked_mssa_with_one_projection():
    model = PrismLM(tiny_model_config("crate", mlp="ista", bias=True, final_norm=False)).eval()
    attn = model.blocks[0].attn
    assert attn.c_attn.bias is None and attn.c_proj.bias is not None and not hasattr(attn, "rotary")
    assert attn.c_proj.weight.std() < 0.02  # a residual projection: N(0, 0.02/√(2L))
    x = torch.randn(1, 6, 32)
    y, probs = attn(x, None, need_weights=True)
    u = attn.c_attn(x).view(1, 6, 2, 16).transpose(1, 2)
    scores = (u @ u.transpose(-1, -2)) / 4.0 + torch.full((6, 6), float("-inf")).triu(1)
    torch.testing.assert_close(probs, scores.softmax(-1))
    torch.testing.assert_close(y, attn.c_proj((scores.softmax(-1) @ u).transpose(1, 2).reshape(1, 6, 32)))
    assert model.ln_f.__class__.__name__ == "Identity"
    idx = torch.randint(0, 97, (1, 10))
    assert torch.equal(generate(model, idx, 6, temperature=0), generate(model, idx, 6, temperature=0,
                                                                           use_cache=False))


def _parity(fields: dict, T: int, seed: int):
    torch.manual_seed(seed)
    official = official_crate(**fields, dropout=0.0, bias=True).eval()
    shake(official, seed)
    ours = PrismLM(crate_config(fields)).eval()
    from prism_lm.checkpoint.model import load_state

    load_state(ours, convert_crate_state(official.state_dict()), "official CRATE")
    idx = torch.randint(0, fields["vocab_size"], (2, T))
    with torch.no_grad():
        expected, _ = official(idx, idx)
        got = ours(idx).logits
    return got, expected


@needs_anchors
def test_crate_lm_equals_the_official_file_on_a_random_config():
    got, expected = _parity(dict(n_layer=3, n_head=4, n_embd=64, block_size=32, vocab_size=101), 32, 1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@needs_anchors
def test_crate_lm_equals_the_official_file_at_its_base_size_shrunk_to_two_layers():
    # 'crate' of from_pretrained: 12 heads, n_embd 768, vocab 50257, block 1024; 2 of its 12 layers
    got, expected = _parity(dict(n_layer=2, n_head=12, n_embd=768, block_size=1024, vocab_size=50257), 48, 2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@needs_anchors
def test_import_crate_reads_a_compiled_nanogpt_checkpoint(tmp_path, capsys):
    fields = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=61)
    official = official_crate(**fields, dropout=0.0, bias=True).eval()
    shake(official)
    state = {f"_orig_mod.{k}": v for k, v in official.state_dict().items()}  # saved from a compiled model
    torch.save({"model": state, "model_args": {**fields, "bias": True, "dropout": 0.0}, "iter_num": 7,
                "best_val_loss": torch.tensor(2.5)}, tmp_path / "ckpt.pt")
    assert main(["import-crate", str(tmp_path / "ckpt.pt"), "--out", str(tmp_path / "ours")]) == 0
    model = load_model(tmp_path / "ours").eval()
    idx = torch.randint(0, 61, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(idx).logits, official(idx, idx)[0], atol=1e-5, rtol=1e-5)
    cfg = model.config
    assert (cfg.attention, cfg.mlp, cfg.ista.mode, cfg.final_norm, cfg.bias) == ("crate", "ista", "replace", False,
                                                                                 True)


class NotAllowed:
    """An object a weights_only load must refuse."""


def test_import_crate_refuses_bad_input_in_one_line(tmp_path, capsys):
    torch.save({"model": NotAllowed(), "model_args": {}}, tmp_path / "unsafe.pt")
    torch.save({"model": {"transformer.h.0.mystery": torch.zeros(1)},
                "model_args": dict(n_layer=1, n_head=1, n_embd=8, block_size=4, vocab_size=5)}, tmp_path / "odd.pt")
    torch.save({"model": {}, "model_args": {"n_layer": 1}}, tmp_path / "short.pt")
    for name, message in [("unsafe.pt", "is not a plain checkpoint"), ("odd.pt", "unexpected weight"),
                          ("short.pt", "model_args lacks 'n_head'"), ("missing.pt", "not found")]:
        assert main(["import-crate", str(tmp_path / name), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert "weights_only" not in err[0] and not (tmp_path / "out").exists()
    with pytest.raises(PrismError, match="unexpected weight"):
        convert_crate_state({"lm_head.bias": torch.zeros(1)})
    with pytest.raises(PrismError, match="a CRATE checkpoint not found"):
        import_crate(tmp_path / "missing.pt", tmp_path / "o2")


@needs_anchors
def test_import_crate_writes_nothing_from_non_finite_weights_or_non_integer_sizes(tmp_path, capsys):
    fields = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=61)
    state = official_crate(**fields, dropout=0.0, bias=True).state_dict()
    state["transformer.h.0.ista.weight"][0, 0] = float("nan")
    torch.save({"model": state, "model_args": {**fields, "bias": True, "dropout": 0.0}}, tmp_path / "nan.pt")
    torch.save({"model": state, "model_args": {**fields, "n_layer": "two"}}, tmp_path / "two.pt")
    for name, message in [("nan.pt", "tensor 'blocks.0.mlp.weight' holds NaN or infinite values"),
                          ("two.pt", "model_args n_layer must be an integer, got 'two'")]:
        assert main(["import-crate", str(tmp_path / name), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not (tmp_path / "out").exists()  # nothing written that every loader would refuse
