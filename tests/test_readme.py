"""README's and the docs pages' Python examples, run as written, in a fresh directory that holds what
they name: a run at runs/prism-50m-tinystories (a small PRISM of the depth and heads the examples
index, GPT-2 vocabulary) and its Hugging Face export at hf/prism, made with the documented command.

The pages' blocks run after README's, in one script (README's block defines ``model``, ``codec``,
``idx``, ``targets``; each page says so). By default every ``torch.compile(f, ...)`` of the examples
is replaced by ``f`` (the compiled decoding step then runs eagerly, with the same static cache: the
compiler's first call costs 20-30 s on this CPU); the ``slow`` twin runs them as written, compiler
included."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prism_lm.checkpoint import save_model
from prism_lm.data.tokenizer import Codec
from prism_lm.model import PrismLM
from tests.helpers import ROOT, cli_env, tiny_model_config

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def test_every_docs_page_is_linked_from_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert [p.name for p in PAGES[1:] if f"docs/{p.name}" not in readme] == []


def _run_examples(tmp_path: Path, compile_enabled: bool) -> None:
    pytest.importorskip("transformer_lens")
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config(vocab_size=50304, n_layer=8, n_head=4, n_embd=32, block_size=320))
    save_model(model, tmp_path / "runs" / "prism-50m-tinystories" / "checkpoints" / "best", codec=Codec())
    export = next(line for page in PAGES for block in _blocks(page, "bash") for line in block.splitlines()
                  if line.startswith("prism export hf runs/prism-50m-tinystories"))
    argv = export.split("#")[0].split()[1:]
    done = subprocess.run([sys.executable, "-m", "prism_lm.cli", *argv], cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    script = "\n".join(block for page in PAGES for block in _blocks(page, "python"))
    script = script.replace("\n    ...\n", "\n    pass\n")
    assert "runs/prism-50m-tinystories" in script and "hf/prism" in script
    if not compile_enabled:
        assert "torch.compile(" in script
        script = script.replace("torch.compile(", "(lambda f, **options: f)(")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=dict(cli_env(), HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def test_python_examples_run_as_written(tmp_path):
    _run_examples(tmp_path, compile_enabled=False)


@pytest.mark.slow
def test_python_examples_run_as_written_with_the_compiler(tmp_path):
    _run_examples(tmp_path, compile_enabled=True)
