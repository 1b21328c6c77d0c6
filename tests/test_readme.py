"""README's Python examples, run as written, in a fresh directory that holds what they name: a run
at runs/prism-50m-tinystories (a small PRISM of the depth and heads the examples index, GPT-2
vocabulary) and its Hugging Face export at hf/prism, made with README's own command."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prism_lm.checkpoint import save_model
from prism_lm.data.tokenizer import Codec
from prism_lm.model import PrismLM
from tests.conftest import tiny_config
from tests.train.helpers import cli_env

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_python_examples_run_as_written(tmp_path):
    pytest.importorskip("transformer_lens")
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = PrismLM(tiny_config(vocab_size=50304, n_layer=8, n_head=4, n_embd=32, block_size=320))
    save_model(model, tmp_path / "runs" / "prism-50m-tinystories" / "checkpoints" / "best", codec=Codec())
    export = next(line for block in _blocks("bash") for line in block.splitlines()
                  if line.startswith("prism export hf runs/prism-50m-tinystories"))
    argv = export.split("#")[0].split()[1:]
    done = subprocess.run([sys.executable, "-m", "prism_lm.cli", *argv], cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    script = "\n".join(_blocks("python")).replace("\n    ...\n", "\n    pass\n")
    assert "runs/prism-50m-tinystories" in script and "hf/prism" in script
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=dict(cli_env(), HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
