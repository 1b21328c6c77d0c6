"""The prism command: each subcommand end to end, and one-line errors with non-zero exit."""

import subprocess
import sys

import torch

from prism_lm.checkpoint import save_model
from prism_lm.cli import main
from prism_lm.model import PrismLM
from tests.conftest import tiny_config
from tests.reference import make_official_checkpoint


def test_sample_prints_text(tmp_path, capsys):
    save_model(PrismLM(tiny_config(vocab_size=50304)), tmp_path / "ck")
    assert main(["sample", str(tmp_path / "ck"), "--prompt", "Once upon a time", "--max-new-tokens", "5",
                 "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Once upon a time") and len(out.strip()) > len("Once upon a time")


def test_sample_small_vocab_prints_ids(tmp_path, capsys):
    save_model(PrismLM(tiny_config()), tmp_path / "ck")
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
    assert main(["import-official", str(tmp_path / "ckpt.pt"), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert main(["import-official", str(tmp_path / "ckpt.pt"), str(tmp_path / "out")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_errors_are_one_line_with_nonzero_exit(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "prism_lm.cli", "sample", str(tmp_path / "missing")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: checkpoint not found")
