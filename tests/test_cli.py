"""The prism command: each subcommand end to end, and one-line errors with non-zero exit."""

import subprocess
import sys

import pytest
import torch

from prism_lm.checkpoint import save_model
from prism_lm.cli import main
from prism_lm.model import PrismLM
from tests.helpers import tiny_model_config
from tests.reference import make_official_checkpoint


def test_sample_prints_text(tmp_path, capsys):
    save_model(PrismLM(tiny_model_config(vocab_size=50304)), tmp_path / "ck")
    assert main(["sample", str(tmp_path / "ck"), "--prompt", "Once upon a time", "--max-new-tokens", "5",
                 "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Once upon a time") and len(out.strip()) > len("Once upon a time")


def test_sample_small_vocab_prints_ids(tmp_path, capsys):
    save_model(PrismLM(tiny_model_config()), tmp_path / "ck")
    assert main(["sample", str(tmp_path / "ck"), "--prompt", "1 2 3", "--max-new-tokens", "4"]) == 0
    ids = capsys.readouterr().out.split()
    assert ids[:3] == ["1", "2", "3"] and len(ids) == 7
    assert main(["sample", str(tmp_path / "ck"), "--prompt", "1 200"]) == 2
    assert "error: prompt token ids must be in [0, 97)" in capsys.readouterr().err


def test_import_official_cli(tmp_path, capsys):
    args = dict(n_layer=1, n_head=2, n_embd=8, block_size=8, bias=False, vocab_size=20, dropout=0.0,
                prism_expansion_ratio=2, prism_freq_multiplier=3.14159, prism_lambda_start=0.01,
                prism_lambda_end=0.1)
    torch.save(make_official_checkpoint(args), tmp_path / "ckpt.pt")
    assert main(["import-official", str(tmp_path / "ckpt.pt"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert main(["import-official", str(tmp_path / "ckpt.pt"), "--out", str(tmp_path / "out")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_errors_are_one_line_with_nonzero_exit(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "prism_lm.cli", "sample", str(tmp_path / "missing")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: checkpoint not found")


def _compact_checkpoint(path):
    """A model over a compact vocabulary (the GPT-2 ids of a few words), saved with its codec."""
    from prism_lm.data.tokenizer import EOT_ID, Codec, encode

    token_map = sorted(set(encode("Once upon a time there was a frog. The frog was happy.")) | {EOT_ID})
    codec = Codec(token_map)
    save_model(PrismLM(tiny_model_config(vocab_size=len(token_map))), path, codec=codec)
    return codec


def test_sample_uses_the_checkpoints_own_codec(tmp_path, capsys):
    """A compact-vocabulary checkpoint (the demo's kind) samples from a text prompt and prints text."""
    codec = _compact_checkpoint(tmp_path / "ck")
    assert main(["sample", str(tmp_path / "ck"), "--prompt", "Once upon a time", "--max-new-tokens", "12",
                 "--temperature", "0"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("Once upon a time") and len(out) > len("Once upon a time")
    assert codec.encode(out)  # every token of the output is in the model's vocabulary
    assert main(["sample", str(tmp_path / "ck"), "--prompt", "Once upon a xylophone"]) == 2
    assert "outside this model's compact vocabulary" in capsys.readouterr().err


def test_sample_top_p_and_num_samples(tmp_path, capsys):
    _compact_checkpoint(tmp_path / "ck")
    base = ["sample", str(tmp_path / "ck"), "--prompt", "Once upon a time", "--max-new-tokens", "10"]
    assert main([*base, "--temperature", "0"]) == 0
    greedy = capsys.readouterr().out.strip()
    # top-p this small keeps only the most likely token at every step: sampling becomes greedy
    assert main([*base, "--temperature", "1", "--top-k", "1000", "--top-p", "1e-6", "--num-samples", "3"]) == 0
    samples = capsys.readouterr().out.strip().split("\n---\n")
    assert samples == [greedy] * 3
    assert main([*base, "--temperature", "1.5", "--num-samples", "2", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out.strip().split("\n---\n")) == 2


@pytest.mark.parametrize("args, message", [
    (["--top-k", "0"], "--top-k: must be an integer in [1, 2,147,483,648), got 0"),
    (["--top-p", "0"], "--top-p: must be a finite number in (0, 1], got 0.0"),
    (["--top-p", "1.5"], "--top-p: must be a finite number in (0, 1], got 1.5"),
    (["--num-samples", "0"], "--num-samples: must be an integer in [1, 10,000], got 0"),
    (["--max-new-tokens", "-3"], "--max-new-tokens: must be an integer in [1, 100,000], got -3"),
    (["--temperature", "-1"], "--temperature: must be a finite number >= 0, got -1.0"),
])
def test_sample_rejects_bad_options(tmp_path, capsys, args, message):
    _compact_checkpoint(tmp_path / "ck")
    assert main(["sample", str(tmp_path / "ck"), "--prompt", "Once upon a time", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: prism sample: argument ") and message in err and err.count("\n") == 1


def test_eval_cli_scores_every_token_of_a_split(tmp_path, capsys):
    import json

    from prism_lm.data.shards import ShardSet
    from prism_lm.evaluate import evaluate_split
    from tests.helpers import prepare_tiny

    data = prepare_tiny(tmp_path / "d", stories=40)
    vocab = ShardSet(data, "val").vocab_size
    model = PrismLM(tiny_model_config(vocab_size=vocab))
    save_model(model, tmp_path / "ck")
    assert main(["eval", str(tmp_path / "ck"), "--data", str(data), "--context", "8", "32", "--json"]) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)["results"]
    # not on a terminal: a line as each context starts, on stderr (stdout stays the JSON)
    assert [line.split(": ")[0] for line in captured.err.splitlines()] == [
        f"[eval] val split of {data}, context 8", f"[eval] val split of {data}, context 32"]
    assert [r["context"] for r in results] == [8, 32]
    expected = evaluate_split(model.eval(), ShardSet(data, "val"), 32)
    assert results[1]["loss"] == pytest.approx(expected["loss"]) and results[1]["tokens"] == expected["tokens"]
    assert main(["eval", str(tmp_path / "ck"), "--data", str(data), "--context", "16"]) == 0
    assert capsys.readouterr().out.startswith("context    16: val loss")
    for bad, message in ((["--context", "0"], "--context: must be an integer in [1, "),
                         (["--context", "64"], "exceeds"), (["--batch-size", "0"], "--batch-size: must be an integer")):
        assert main(["eval", str(tmp_path / "ck"), "--data", str(data), *bad]) == 2
        assert message in capsys.readouterr().err
