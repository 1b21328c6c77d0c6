"""Checkpoints: safetensors + JSON round trip, strict loading, official import parity."""

import json

import pytest
import torch

import prism_lm
from prism_lm.checkpoint import import_official, save_model
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM
from tests.helpers import ALL_KINDS, tiny_model_config
from tests.reference import make_official_checkpoint, official_logits


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_round_trip(tmp_path, kind):
    model = PrismLM(tiny_model_config(kind, prism=dict(freq_multiplier="phi"))).eval()
    model.set_scheduled_lambda(0.042)
    save_model(model, tmp_path / "ck")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors"]
    loaded = prism_lm.load_model(tmp_path / "ck")
    assert not loaded.training
    assert loaded.config == model.config
    idx = torch.randint(0, 97, (2, 9))
    torch.testing.assert_close(loaded(idx).logits, model(idx).logits, atol=0, rtol=0)
    assert loaded.lm_head.weight is loaded.wte.weight
    if kind == "prism":
        assert loaded.lambdas() == pytest.approx([0.042, 0.042])


def test_save_refuses_to_overwrite(tmp_path):
    model = PrismLM(tiny_model_config())
    save_model(model, tmp_path / "ck")
    before = (tmp_path / "ck" / "model.safetensors").read_bytes()
    with pytest.raises(PrismError, match="overwrite"):
        save_model(PrismLM(tiny_model_config()), tmp_path / "ck")
    assert (tmp_path / "ck" / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck"], "no temporary directory left behind"


def test_shape_mismatch_names_the_tensor(tmp_path):
    save_model(PrismLM(tiny_model_config()), tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    meta["model"]["prism"]["expansion_ratio"] = 4
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(PrismError, match=r"blocks\.0\.attn\.u_proj\.weight.*shape"):
        prism_lm.load_model(tmp_path / "ck")


def test_a_checkpoint_of_an_earlier_release_with_flat_keys_loads_the_same_without_a_notice(tmp_path, capsys):
    from prism_lm.model.config import LEGACY_KEYS

    model = PrismLM(tiny_model_config("prism+ista", prism=dict(freq_multiplier="phi", lambda_start=0.3))).eval()
    save_model(model, tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    sections = {name: meta["model"].pop(name) for name in ("prism", "ista")}
    meta["model"].update({old: sections[section][new] for old, (section, new) in LEGACY_KEYS.items()})
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))  # as written before [model.prism] existed
    loaded = prism_lm.load_model(tmp_path / "ck")
    assert loaded.config == model.config and loaded.config.ista.mode == "residual"
    idx = torch.randint(0, 97, (1, 8))
    assert torch.equal(loaded(idx).logits, model(idx).logits)
    assert "warning" not in capsys.readouterr().err  # the user wrote nothing old: nothing to tell


def test_missing_and_unexpected_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    save_model(PrismLM(tiny_model_config()), tmp_path / "ck")
    path = tmp_path / "ck" / "model.safetensors"
    state = load_file(path)
    del state["blocks.1.ln_2.weight"]
    save_file(state, path)
    with pytest.raises(PrismError, match="missing tensor 'blocks.1.ln_2.weight'"):
        prism_lm.load_model(tmp_path / "ck")
    state["blocks.1.ln_2.weight"] = torch.ones(32)
    state["extra.weight"] = torch.ones(2)
    save_file(state, path)
    with pytest.raises(PrismError, match="unexpected tensor 'extra.weight'"):
        prism_lm.load_model(tmp_path / "ck")


def test_truncated_and_foreign_files(tmp_path):
    save_model(PrismLM(tiny_model_config()), tmp_path / "ck")
    path = tmp_path / "ck" / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PrismError, match="not a readable safetensors"):
        prism_lm.load_model(tmp_path / "ck")
    path.write_bytes(b"PK\x03\x04 this is a zip, not safetensors")
    with pytest.raises(PrismError, match="not a readable safetensors"):
        prism_lm.load_model(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text("{not json")
    with pytest.raises(PrismError, match="not valid JSON"):
        prism_lm.load_model(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text('{"format": "other"}')
    with pytest.raises(PrismError, match="not a prism-lm model config"):
        prism_lm.load_model(tmp_path / "ck")
    with pytest.raises(PrismError, match="not found"):
        prism_lm.load_model(tmp_path / "nope")


def test_unknown_config_key_in_checkpoint(tmp_path):
    save_model(PrismLM(tiny_model_config()), tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    meta["model"]["n_heads"] = 3
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(PrismError, match="unknown config key 'model.n_heads'"):
        prism_lm.load_model(tmp_path / "ck")


class NotAllowed:
    """Pickled objects other than tensors and plain containers are refused by weights_only."""


OFFICIAL_ARGS = dict(n_layer=2, n_head=2, n_embd=16, block_size=24, bias=False, vocab_size=61, dropout=0.1,
                     prism_expansion_ratio=2, prism_freq_multiplier=3.1415926535,
                     prism_lambda_start=0.01, prism_lambda_end=0.1)


@pytest.mark.parametrize("bias,prefix", [(False, ""), (True, "_orig_mod.")])
def test_official_import_reproduces_official_logits(tmp_path, bias, prefix):
    args = {**OFFICIAL_ARGS, "bias": bias}
    ckpt = make_official_checkpoint(args, seed=1, prefix=prefix)
    torch.save(ckpt, tmp_path / "ckpt.pt")
    import_official(tmp_path / "ckpt.pt", tmp_path / "ours")
    model = prism_lm.load_model(tmp_path / "ours")
    assert model.lambdas() == pytest.approx([0.05, 0.06])
    assert model.config.prism.lambda_schedule == "constant"
    idx = torch.randint(0, 61, (24,))
    expected = official_logits(ckpt["model"], args, idx)
    torch.testing.assert_close(model(idx[None]).logits[0], expected, atol=1e-5, rtol=1e-5)
    meta = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert meta["imported_from"]["iter_num"] == 1234
    assert meta["imported_from"]["best_val_loss"] == pytest.approx(1.55)


def test_official_import_rejects_bad_input(tmp_path):
    with pytest.raises(PrismError, match="not found"):
        import_official(tmp_path / "missing.pt", tmp_path / "out")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(PrismError, match="not a loadable checkpoint"):
        import_official(tmp_path / "junk.pt", tmp_path / "out")
    torch.save({"weights": {}}, tmp_path / "foreign.pt")
    with pytest.raises(PrismError, match="needs 'model' and 'model_args'"):
        import_official(tmp_path / "foreign.pt", tmp_path / "out")
    torch.save({"model": NotAllowed(), "model_args": {}}, tmp_path / "unsafe.pt")
    with pytest.raises(PrismError, match="is not a plain checkpoint") as info:
        import_official(tmp_path / "unsafe.pt", tmp_path / "out")
    assert "weights_only" not in str(info.value) and "succeed" not in str(info.value)  # no advice to unpickle
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_knows_its_codec(tmp_path):
    from prism_lm.checkpoint import load_codec
    from prism_lm.data.tokenizer import EOT_ID, Codec

    save_model(PrismLM(tiny_model_config(vocab_size=4)), tmp_path / "compact", codec=Codec([11, 13, 17, EOT_ID]))
    codec = load_codec(tmp_path / "compact")
    assert codec.token_map == [11, 13, 17, EOT_ID] and codec.eot == 3
    save_model(PrismLM(tiny_model_config(vocab_size=50304)), tmp_path / "gpt2")  # no record, GPT-2-sized: GPT-2 BPE
    assert load_codec(tmp_path / "gpt2").token_map is None
    save_model(PrismLM(tiny_model_config()), tmp_path / "ids")  # no record, 97 ids: a model of bare ids
    assert load_codec(tmp_path / "ids") is None


def test_a_data_folder_with_another_tokenizer_is_refused_not_scored(tmp_path, capsys):
    """Two compact vocabularies (two corpora) have different ids even where their sizes allow both;
    a GPT-2-vocabulary checkpoint on a compact folder is refused too."""
    from prism_lm.checkpoint import save_model
    from prism_lm.cli import main
    from prism_lm.data.prepare import prepare
    from prism_lm.data.shards import ShardSet
    from prism_lm.model import PrismLM
    from tests.helpers import tiny_model_config

    prepare(["embedded:30"], tmp_path / "a", val_fraction=0.2, compact_vocab=True, progress=False)
    prepare(["embedded:400"], tmp_path / "b", val_fraction=0.2, compact_vocab=True, progress=False)
    a, b = ShardSet(tmp_path / "a", "val"), ShardSet(tmp_path / "b", "val")
    assert a.codec().token_map != b.codec().token_map
    vocab = max(a.vocab_size, b.vocab_size)
    save_model(PrismLM(tiny_model_config(vocab_size=vocab, block_size=16)), tmp_path / "ck", codec=a.codec())
    assert main(["eval", str(tmp_path / "ck"), "--data", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "ck"), "--data", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "ids mean different tokens" in err and err.count("\n") == 1
    save_model(PrismLM(tiny_model_config(vocab_size=50304, block_size=16, n_layer=1)), tmp_path / "gpt2")
    assert main(["eval", str(tmp_path / "gpt2"), "--data", str(tmp_path / "a")]) == 2
    assert "GPT-2 BPE" in capsys.readouterr().err


class _RunsCode:
    """A pickle that would run code on load (it writes a marker file): weights_only must refuse it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_pickle_that_would_run_code_is_refused_for_what_it_is(tmp_path, capsys):
    from prism_lm.cli import main

    torch.save({"model": {"w": _RunsCode(tmp_path / "ran")}, "model_args": {}}, tmp_path / "evil.pt")
    for command in ("import-official", "import-crate"):
        assert main([command, str(tmp_path / "evil.pt"), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds Python objects beyond tensors" in err[0], err  # not "not a torch file"
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out").exists()
