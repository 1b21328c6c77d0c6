"""One name for each thing across subcommands, evaluation-time ``--set``, and the old spellings' warnings."""

import json

import pytest
import torch

from prism_lm.checkpoint import load_model, save_model
from prism_lm.cli import build_parser, main
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM
from prism_lm.model.interventions import intervene
from tests.helpers import tiny_model_config


def _subparsers(parser, prefix=()):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, child in action.choices.items():
                yield (*prefix, name), child
                yield from _subparsers(child, (*prefix, name))


def test_help_marks_required_options_and_never_prints_default_none():
    for path, parser in _subparsers(build_parser()):
        text = parser.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, path
        for action in parser._actions:
            if action.required and action.option_strings:
                assert f"{action.help} (required)" in " ".join(text.split()), (path, action.dest)


def test_every_command_on_a_checkpoint_names_it_the_same_and_takes_a_device():
    commands = {path: p for path, p in _subparsers(build_parser())}
    for path in (("eval",), ("sample",), ("analyze",), ("ablate",), ("export", "hf")):
        positional = [a.dest for a in commands[path]._actions if not a.option_strings and a.help != "==SUPPRESS=="]
        assert positional[:1] == ["checkpoint"], path
    for path in (("eval",), ("sample",), ("analyze",), ("ablate",), ("explore",), ("bench", "train")):
        assert any("--device" in a.option_strings for a in commands[path]._actions), path
    for path in (("eval",), ("analyze",), ("ablate",)):  # --data defaults to the run's recorded folder
        data = next(a for a in commands[path]._actions if "--data" in a.option_strings)
        assert not data.required and data.default is None, path


def test_eval_and_analyze_default_to_the_data_folder_the_run_recorded(trained, capsys, tmp_path):
    assert main(["eval", str(trained / "run"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"] == str(trained / "d")  # the folder it scored, also when defaulted
    explicit = main(["eval", str(trained / "run"), "--data", str(trained / "d"), "--json"])
    assert explicit == 0 and json.loads(capsys.readouterr().out)["results"] == out["results"]
    assert main(["analyze", str(trained / "run"), "--out", str(tmp_path / "rep"), "--max-windows", "2",
                 "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["data"] == str(trained / "d")
    bare = tmp_path / "bare"
    save_model(load_model(trained / "run"), bare)
    assert main(["eval", str(bare)]) == 2
    assert "records no data folder (not inside a run): pass --data" in capsys.readouterr().err


def test_eval_time_lambda_is_the_intervention_for_every_kind_with_one(tmp_path):
    idx = torch.randint(0, 97, (2, 12))
    for kind, schedule in (("prism", "cosine"), ("prism", "learned"), ("diff", "learned")):
        model = PrismLM(tiny_model_config(kind, prism=dict(lambda_schedule=schedule))).eval()
        model.set_scheduled_lambda(0.3)
        save_model(model, tmp_path / f"{kind}-{schedule}")
        held = load_model(tmp_path / f"{kind}-{schedule}", overrides=["model.prism.lambda_start=0"])
        assert held.lambdas() == [0.0, 0.0]
        with torch.no_grad(), intervene(model, lam=0.0):
            torch.testing.assert_close(held(idx).logits, model(idx).logits, atol=1e-6, rtol=0)
        with torch.no_grad(), intervene(held, zero_heads=[(0, held.blocks[0].attn.stream_names[0], 0)]):
            assert held.lambdas() == [0.0, 0.0]  # an intervention inside composes with the held λ


def test_eval_time_rope_and_context_changes_keep_the_weights(tmp_path):
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config(position_embedding="none", block_size=16)).eval()
    save_model(model, tmp_path / "ck")
    idx = torch.randint(0, 97, (1, 12))
    m1 = load_model(tmp_path / "ck", overrides=["model.prism.freq_multiplier=1.0"])
    same = PrismLM(tiny_model_config(position_embedding="none", block_size=16, prism=dict(freq_multiplier=1.0))).eval()
    same.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(m1(idx).logits, same(idx).logits, atol=1e-6, rtol=0)
        assert not torch.allclose(m1(idx).logits, model(idx).logits)
        old_name = load_model(tmp_path / "ck", overrides=["model.freq_multiplier=1.0"])  # an earlier release's key
        assert torch.equal(old_name(idx).logits, m1(idx).logits)
    long = load_model(tmp_path / "ck", overrides=["model.block_size=48"])
    assert long.max_positions == 48 and long(torch.randint(0, 97, (1, 40))).logits.shape[1] == 40
    save_model(PrismLM(tiny_model_config(block_size=16)), tmp_path / "wpe")
    for where, overrides, message in (
            ("wpe", ["model.block_size=48"], "learned position embedding"),
            ("ck", ["model.n_embd=64"], "at evaluation only model.prism.freq_multiplier"),
            ("ck", ["model.prism.lambda_start=abc"], "must be a number"),
            ("ck", ["model.block_size=8"], "can only grow"),
            ("ck", ["model.prism.rope_scaling=bogus"], "rope_scaling")):
        with pytest.raises(PrismError, match=message) as info:
            load_model(tmp_path / where, overrides=overrides)
        assert "\n" not in str(info.value)
    gpt = tmp_path / "gpt"
    save_model(PrismLM(tiny_model_config("gpt")), gpt)
    with pytest.raises(PrismError, match="gpt attention has no λ"):
        load_model(gpt, overrides=["model.prism.lambda_start=0"])


@pytest.mark.slow  # 2-5 s; its class keeps a default case beside it
def test_eval_sample_analyze_and_explore_take_eval_time_set(trained, capsys, tmp_path):
    assert main(["eval", str(trained / "run"), "--json"]) == 0
    as_trained = json.loads(capsys.readouterr().out)["results"][0]["loss"]
    assert main(["eval", str(trained / "run"), "--json", "--set", "model.prism.lambda_start=1.0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["eval_overrides"] == ["model.prism.lambda_start=1.0"] and out["results"][0]["loss"] != as_trained
    assert main(["sample", str(trained / "run"), "--prompt", "Once", "--max-new-tokens", "4", "--set",
                 "model.prism.lambda_start=0"]) == 0
    assert capsys.readouterr().out.startswith("Once")
    assert main(["explore", str(trained / "run"), "--out", str(tmp_path / "p.html"),
                 "--set", "model.prism.lambda_start=0"]) == 0
    page = (tmp_path / "p.html").read_text()
    data = json.loads(page.split('type="application/json">')[1].split("</script>")[0])
    assert {layer["lambda"] for layer in data["models"][0]["layers"]} == {0.0}
    assert main(["analyze", str(trained / "run"), "--out", str(tmp_path / "rep"), "--max-windows", "2",
                 "--set", "model.prism.freq_multiplier=1.0"]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["eval_overrides"] == ["model.prism.freq_multiplier=1.0"]
    assert report["model"]["prism"]["freq_multiplier"] == 1.0
    capsys.readouterr()
    assert main(["eval", str(trained / "run"), "--set", "model.n_layer=3"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_old_spellings_work_for_one_release_with_a_warning(trained, capsys, tmp_path):
    from prism_lm.data.tokenizer import Codec

    ck = str(tmp_path / "gpt2-vocab")
    save_model(PrismLM(tiny_model_config(vocab_size=50304)), ck, codec=Codec())
    assert main(["export", "hf", ck, str(tmp_path / "hf-old")]) == 0
    assert "positional output folder is deprecated" in capsys.readouterr().err
    assert (tmp_path / "hf-old" / "config.json").is_file()
    assert main(["export", "hf", ck, str(tmp_path / "b"), "--out", str(tmp_path / "a")]) == 2
    assert "give the output once" in capsys.readouterr().err
    assert main(["export", "hf", ck]) == 2
    assert "--out is required" in capsys.readouterr().err
    assert main(["data", "prepare", "--source", "embedded:20", "--out", str(tmp_path / "d"), "--workers", "1"]) == 0
    assert "--workers is deprecated" in capsys.readouterr().err
    sets = ["--set", "model.n_layer=1", "--set", "model.n_embd=32", "--set", "model.n_head=2",
            "--set", "model.block_size=16", "--set", "model.vocab_size=97"]
    assert main(["bench", "decode", "--config", "tiny-prism-cpu", *sets, "--new-tokens", "2", "--prompt-len", "4",
                 "--attention", "prism", "--cache", "none"]) == 0
    assert "--config is deprecated" in capsys.readouterr().err
    assert main(["bench", "decode", "tiny-prism-cpu", "--config", "tiny-prism-cpu"]) == 2
