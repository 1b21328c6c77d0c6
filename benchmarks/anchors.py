"""The reference implementations in ``../shared/anchors``, imported at run time for side-by-side runs.

Their code is never copied into prism-lm: each file is loaded as a module from the anchors folder
(``--anchors`` or ``$PRISM_ANCHORS``, by default ``../shared/anchors`` beside the checkout). Both
define nanoGPT's ``GPTConfig``/``GPT`` with ``configure_optimizers`` and ``generate``; the official
PRISM adds ``prism_*`` config fields; CRATE's LM is ``CRATEConfig``/``CRATE``. ``build_reference``
gives each the dimensions of a prism-lm ``ModelConfig``, so the two sides of a comparison have the
same shape by construction.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path

import torch

from prism_lm.config import ModelConfig

FILES = {"official-prism": "prism_official_model.py", "nanogpt": "nanogpt_model.py", "crate": "crate_gpt_model.py"}
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "anchors"


def anchors_dir(path: str | Path | None = None) -> Path | None:
    """The anchors folder if it holds both reference files, else None."""
    folder = Path(path or os.environ.get("PRISM_ANCHORS") or DEFAULT_DIR)
    return folder if all((folder / f).is_file() for f in FILES.values()) else None


def load_reference(name: str, folder: Path):
    """The reference file ``FILES[name]`` as a fresh module (its own name, so both can coexist)."""
    spec = importlib.util.spec_from_file_location(f"anchor_{name.replace('-', '_')}", folder / FILES[name])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_reference(name: str, cfg: ModelConfig, folder: Path) -> torch.nn.Module:
    """The reference model with ``cfg``'s dimensions (its constructor's prints go to stderr)."""
    module = load_reference(name, folder)
    fields = dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
                  vocab_size=cfg.vocab_size, dropout=cfg.dropout, bias=cfg.bias)
    if name == "official-prism":
        fields.update(prism_expansion_ratio=cfg.prism.expansion_ratio,
                      prism_freq_multiplier=cfg.prism.multiplier,
                      prism_lambda_start=cfg.prism.lambda_start, prism_lambda_end=cfg.prism.lambda_end)
    with contextlib.redirect_stdout(sys.stderr):
        if name == "crate":  # CRATE's LM: its LayerNorms have biases whatever ``bias`` says
            return module.CRATE(module.CRATEConfig(**fields))
        return module.GPT(module.GPTConfig(**fields))


def reference_optimizer(model: torch.nn.Module, device: torch.device):
    """The reference's own AdamW (fused on CUDA), with the paper's hyper-parameters."""
    with contextlib.redirect_stdout(sys.stderr):
        return model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device.type)
