"""Official PRISM checkpoints (nanoGPT-style ``ckpt.pt``) -> prism-lm checkpoints.

They are read with ``torch.load(weights_only=True)`` only, so a pickle cannot run code. Their U
rows are permuted from interleaved RoPE pairs to our contiguous halves (an exact
reparametrisation, see ``model/rope.py``; the dictionary's layout comes from ``PrismAttention``);
their λ is kept as a constant.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from prism_lm.bounds import INT64, bounded_int, finite_float
from prism_lm.checkpoint.model import TIED_KEY, load_state, model_state, refuse_non_finite, write_model_files
from prism_lm.errors import PrismError
from prism_lm.files import atomic_directory
from prism_lm.model import PrismLM
from prism_lm.model.attention import PrismAttention
from prism_lm.model.config import ModelConfig, PrismConfig
from prism_lm.model.kinds import validate_model
from prism_lm.model.rope import interleaved_to_halves

OFFICIAL_ARGS = {"n_layer": int, "n_head": int, "n_embd": int, "block_size": int, "bias": bool, "vocab_size": int,
                 "prism_expansion_ratio": int, "prism_freq_multiplier": float, "prism_lambda_start": float,
                 "prism_lambda_end": float}


def typed_model_args(args: Any, kinds: dict[str, type], where: str) -> dict[str, Any]:
    """A nanoGPT-format checkpoint's ``model_args`` as the types ``kinds`` names (``dropout`` too, 0.0
    when absent): a missing key, a value of another type (``n_layer = "two"``), a non-finite float or
    an integer beyond 64 bits is a one-line error naming it, whatever the checkpoint holds."""
    if not isinstance(args, dict):
        raise PrismError(f"{where}: model_args is not a table")
    out = {}
    for key, kind in {**kinds, "dropout": float}.items():
        if key not in args and key != "dropout":
            raise PrismError(f"{where}: model_args lacks {key!r}")
        value, name = args.get(key, 0.0), f"{where}: model_args {key}"
        if kind is bool:
            if value not in (0, 1) or isinstance(value, float):
                raise PrismError(f"{name} must be true or false, got {value!r}")
            out[key] = bool(value)
        else:
            out[key] = finite_float(value, name) if kind is float else bounded_int(value, name, -INT64)
    return out


def _official_config(args: dict[str, Any]) -> ModelConfig:
    a = typed_model_args(args, OFFICIAL_ARGS, "official checkpoint")
    cfg = ModelConfig(
        attention="prism", n_layer=a["n_layer"], n_head=a["n_head"], n_embd=a["n_embd"], block_size=a["block_size"],
        vocab_size=a["vocab_size"], bias=a["bias"], dropout=a["dropout"],
        prism=PrismConfig(expansion_ratio=a["prism_expansion_ratio"], freq_multiplier=a["prism_freq_multiplier"],
                          lambda_schedule="constant", lambda_start=a["prism_lambda_start"],
                          lambda_end=a["prism_lambda_end"]),
    )
    validate_model(cfg)
    return cfg


def convert_official_state(official: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename official keys to ours, drop mask buffers, permute U rows to the halves RoPE layout."""
    official = {k.removeprefix("_orig_mod."): v for k, v in official.items()}
    S, H, D, C = PrismAttention.dictionary_shape(cfg)
    perm = interleaved_to_halves(D)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in official.items():
        if key.endswith(".attn.bias") or key == TIED_KEY:
            continue
        new = key.removeprefix("transformer.").replace("h.", "blocks.", 1) if key.startswith("transformer.h.") \
            else key.removeprefix("transformer.")
        if new.endswith(".attn.lambda_q"):
            new = new.replace(".attn.lambda_q", ".attn.lambda_")
            tensor = tensor.reshape(())
        elif new.endswith(".attn.u_proj.weight"):
            tensor = tensor.view(S * H, D, C)[:, perm].reshape(S * H * D, C)
        out[new] = tensor.float().contiguous()
    return out


def load_plain_checkpoint(ckpt_path: Path, what: str) -> dict[str, Any]:
    """A nanoGPT-format ``ckpt.pt`` (``model`` state dict, ``model_args``) read with
    ``torch.load(weights_only=True)``: tensors and plain values only, so a pickle cannot run code.
    ``what`` names the expected kind in errors."""
    if not ckpt_path.is_file():
        raise PrismError(f"{what} not found: {ckpt_path}")
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch words the refusal of an object "Unsupported global" or "unsupported GLOBAL" (by version)
        if "unsupported global" not in str(exc).lower():  # garbage, not a pickle of objects
            raise PrismError(f"{ckpt_path} is not a loadable checkpoint (not a torch file)") from None
        # torch's own message advises weights_only=False: never the advice to give
        raise PrismError(f"{ckpt_path} is not a plain checkpoint: it holds Python objects beyond tensors and "
                         "numbers, which prism-lm does not load (loading them could run code)") from None
    except Exception as exc:  # torch raises many types for truncated/foreign files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PrismError(f"{ckpt_path} is not a loadable checkpoint ({first_line})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or not isinstance(
            ckpt.get("model_args"), dict):
        raise PrismError(f"{ckpt_path} is not {what} (needs 'model' and 'model_args')")
    return ckpt


def import_official(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Read an official PRISM ``ckpt.pt`` (weights_only) and write it as one of our checkpoints."""
    ckpt_path, out_dir = Path(ckpt_path), Path(out_dir)
    ckpt = load_plain_checkpoint(ckpt_path, "an official PRISM checkpoint")
    cfg = _official_config(ckpt["model_args"])
    return save_imported(cfg, convert_official_state(ckpt["model"], cfg), ckpt, ckpt_path, out_dir)


def save_imported(cfg: ModelConfig, state: dict[str, torch.Tensor], ckpt: dict[str, Any], ckpt_path: Path,
                  out_dir: Path, **origin) -> Path:
    """Build ``cfg``'s model, load ``state`` (keys and shapes checked) and write it to the new
    directory ``out_dir``, recording where it came from (``imported_from``: path, iter_num, best_val_loss)."""
    model = PrismLM(cfg)
    load_state(model, state, str(ckpt_path))
    refuse_non_finite(model_state(model), str(ckpt_path))  # nothing is written that every loader would refuse
    extra = {"imported_from": {"path": str(ckpt_path), **origin, "iter_num": _plain(ckpt.get("iter_num")),
                               "best_val_loss": _plain(ckpt.get("best_val_loss"))}}
    with atomic_directory(out_dir) as tmp:
        write_model_files(tmp, model, extra)
    return out_dir


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value
