"""CRATE language-model checkpoints (nanoGPT-format ``ckpt.pt``, the format CRATE's GPT trains
with) -> prism-lm checkpoints of the same model.

CRATE's LM (``model/crate_gpt.py`` of Ma-Lab-Berkeley/CRATE) is prism-lm's model with
``attention = "crate"``, ``mlp = "ista"`` (``[model.ista] mode = "replace"``), ``bias = true`` (its
LayerNorms have biases) and ``final_norm = false``; the weights only change names. Read with
``torch.load(weights_only=True)`` only (``official.load_plain_checkpoint``); a ``torch.compile``
prefix ``_orig_mod.`` is accepted. Its ISTA step size and λ are constants in its code (0.1, 0.1),
so they are CRATE's defaults here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from prism_lm.checkpoint.model import TIED_KEY
from prism_lm.checkpoint.official import load_plain_checkpoint, save_imported, typed_model_args
from prism_lm.errors import PrismError
from prism_lm.model.config import IstaConfig, ModelConfig
from prism_lm.model.kinds import validate_model

CRATE_ARGS = {"n_layer": int, "n_head": int, "n_embd": int, "block_size": int, "vocab_size": int}
_RENAMES = (  # CRATE's key (after transformer.h.N.) -> ours (after blocks.N.)
    ("prenorm_1.", "ln_1."), ("prenorm_2.", "ln_2."), ("ista.weight", "mlp.weight"),
    ("attn.c_attn.", "attn.c_attn."), ("attn.c_proj.", "attn.c_proj."),
)


def crate_config(args: dict[str, Any], **overrides) -> ModelConfig:
    """Our config of CRATE's LM from its ``model_args`` (n_layer, n_head, n_embd, block_size,
    vocab_size, bias, dropout; ``bias`` concerns nothing CRATE builds: its LayerNorms have one)."""
    a = typed_model_args(args, CRATE_ARGS, "CRATE checkpoint")
    cfg = ModelConfig(
        attention="crate", mlp="ista", ista=IstaConfig(mode="replace"), final_norm=False, bias=True,
        n_layer=a["n_layer"], n_head=a["n_head"], n_embd=a["n_embd"], block_size=a["block_size"],
        vocab_size=a["vocab_size"], dropout=a["dropout"], **overrides)
    validate_model(cfg)
    return cfg


def convert_crate_state(crate: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename CRATE's keys to ours; drop its causal-mask buffers and the tied head's second name."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in crate.items():
        key = key.removeprefix("_orig_mod.")
        if key.endswith(".attn.bias") or key == TIED_KEY:
            continue
        block = re.fullmatch(r"transformer\.h\.(\d+)\.(.+)", key)
        if block:
            layer, rest = block.groups()
            new = next((f"blocks.{layer}.{ours}{rest[len(theirs):]}" for theirs, ours in _RENAMES
                        if rest.startswith(theirs)), None)
            if new is None:
                raise PrismError(f"CRATE checkpoint: unexpected weight {key!r}")
        elif key in ("transformer.wte.weight", "transformer.wpe.weight"):
            new = key.removeprefix("transformer.")
        else:
            raise PrismError(f"CRATE checkpoint: unexpected weight {key!r}")
        out[new] = tensor.float().contiguous()
    return out


def import_crate(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Read a CRATE ``ckpt.pt`` (weights_only) and write it as one of our checkpoints."""
    ckpt_path, out_dir = Path(ckpt_path), Path(out_dir)
    ckpt = load_plain_checkpoint(ckpt_path, "a CRATE checkpoint")
    return save_imported(crate_config(ckpt["model_args"]), convert_crate_state(ckpt["model"]), ckpt, ckpt_path,
                         out_dir, format="CRATE (nanoGPT ckpt.pt)")
