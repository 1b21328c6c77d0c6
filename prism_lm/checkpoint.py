"""Model checkpoints without pickle: ``model.safetensors`` + ``config.json``, and official import.

Design choices:
- A checkpoint is a directory. ``config.json`` holds ``{"format": ..., "model": ModelConfig}``;
  weights are safetensors with the tied LM head stored once (as ``wte.weight``).
- Writing goes to a temporary sibling directory that is renamed into place, so a checkpoint
  directory is complete or absent, and an existing one is never overwritten.
- Loading checks every key and shape before touching the model and names the first mismatch.
- Official PRISM checkpoints (nanoGPT-style ``ckpt.pt``) are read with ``weights_only=True`` only.
  Their U rows are permuted from interleaved RoPE pairs to our contiguous halves (an exact
  reparametrisation, see ``model/rope.py``); their λ is kept as a constant.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from prism_lm.config import ModelConfig, from_dict, to_dict
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM
from prism_lm.model.rope import interleaved_to_halves

FORMAT = "prism-lm/model/1"
WEIGHTS, CONFIG = "model.safetensors", "config.json"
TIED_KEY = "lm_head.weight"


def model_state(model: PrismLM) -> dict[str, torch.Tensor]:
    """Persistent tensors, tied head dropped, contiguous, on CPU."""
    state = model.state_dict()
    state.pop(TIED_KEY, None)
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def write_model_files(directory: Path, model: PrismLM, extra: dict[str, Any] | None = None,
                      weights: dict[str, torch.Tensor] | None = None) -> None:
    """Write weights (``model_state(model)`` unless given) and config.json into an existing directory."""
    from safetensors.torch import save_file

    save_file(weights if weights is not None else model_state(model), str(directory / WEIGHTS),
              metadata={"format": FORMAT})
    meta = {"format": FORMAT, "model": to_dict(model.config), **(extra or {})}
    (directory / CONFIG).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def atomic_directory(target: Path):
    """Context manager: yields a temp dir next to ``target``, renamed to it on success."""
    return _AtomicDirectory(Path(target))


class _AtomicDirectory:
    def __init__(self, target: Path):
        self.target = target

    def __enter__(self) -> Path:
        if self.target.exists() and any(self.target.iterdir()):
            raise PrismError(f"refusing to overwrite non-empty {self.target}")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.target.exists():  # an empty directory may stand in the way
            self.target.rmdir()
        os.replace(self.tmp, self.target)


def save_model(model: PrismLM, directory: str | Path) -> Path:
    """Save weights + config to a new directory (complete or absent; never overwrites)."""
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        write_model_files(tmp, model)
    return directory


def read_model_config(directory: Path) -> tuple[ModelConfig, dict[str, Any]]:
    path = directory / CONFIG
    if not path.is_file():
        raise PrismError(f"not a checkpoint: {path} is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PrismError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise PrismError(f"{path} is not a prism-lm model config (expected format {FORMAT!r})")
    cfg = from_dict(ModelConfig, meta["model"], "model")
    cfg.validate()
    return cfg, meta


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise PrismError(f"not a checkpoint: {path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PrismError(f"{path} is not a readable safetensors file ({exc})") from None


def load_state_strict(model: PrismLM, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` after checking that keys and shapes match exactly."""
    expected = model.state_dict()
    expected.pop(TIED_KEY, None)
    for key, tensor in expected.items():
        if key not in state:
            raise PrismError(f"{source}: missing tensor {key!r}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise PrismError(
                f"{source}: tensor {key!r} has shape {tuple(state[key].shape)}, model expects {tuple(tensor.shape)}"
            )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise PrismError(f"{source}: unexpected tensor {unexpected[0]!r}")
    model.load_state_dict(state, strict=False)  # strict=False only because of the tied head


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (its ``checkpoints/best``, else the newest step)."""
    path = Path(path)
    if not path.exists():
        raise PrismError(f"checkpoint not found: {path}")
    if (path / CONFIG).is_file():
        return path
    ckpts = path / "checkpoints"
    if (ckpts / "best" / CONFIG).is_file():
        return ckpts / "best"
    steps = sorted(p for p in ckpts.glob("step-*") if (p / CONFIG).is_file()) if ckpts.is_dir() else []
    if steps:
        return steps[-1]
    raise PrismError(f"{path} holds no checkpoint (no {CONFIG}, no checkpoints/best or checkpoints/step-*)")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> PrismLM:
    """Load a checkpoint (or a run's best/newest one); the model is returned in eval mode."""
    directory = resolve_checkpoint_dir(path)
    cfg, _ = read_model_config(directory)
    model = PrismLM(cfg)
    load_state_strict(model, read_weights(directory / WEIGHTS), str(directory / WEIGHTS))
    return model.to(device).eval()


# --------------------------------------------------------------------------- official import

OFFICIAL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size",
                 "prism_expansion_ratio", "prism_freq_multiplier", "prism_lambda_start", "prism_lambda_end")


def _official_config(args: dict[str, Any]) -> ModelConfig:
    missing = [k for k in OFFICIAL_ARGS if k not in args]
    if missing:
        raise PrismError(f"official checkpoint: model_args lacks {missing[0]!r}")
    cfg = ModelConfig(
        attention="prism", n_layer=int(args["n_layer"]), n_head=int(args["n_head"]), n_embd=int(args["n_embd"]),
        block_size=int(args["block_size"]), vocab_size=int(args["vocab_size"]), bias=bool(args["bias"]),
        dropout=float(args.get("dropout", 0.0)), expansion_ratio=int(args["prism_expansion_ratio"]),
        freq_multiplier=float(args["prism_freq_multiplier"]), lambda_schedule="constant",
        lambda_start=float(args["prism_lambda_start"]), lambda_end=float(args["prism_lambda_end"]),
    )
    cfg.validate()
    return cfg


def convert_official_state(official: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename official keys to ours, drop mask buffers, permute U rows to the halves RoPE layout."""
    official = {k.removeprefix("_orig_mod."): v for k, v in official.items()}
    perm = interleaved_to_halves(cfg.head_dim)
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
            rows, C = tensor.shape
            tensor = tensor.view(rows // cfg.head_dim, cfg.head_dim, C)[:, perm].reshape(rows, C)
        out[new] = tensor.float().contiguous()
    return out


def import_official(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Read an official PRISM ``ckpt.pt`` (weights_only) and write it as one of our checkpoints."""
    ckpt_path, out_dir = Path(ckpt_path), Path(out_dir)
    if not ckpt_path.is_file():
        raise PrismError(f"official checkpoint not found: {ckpt_path}")
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign/unsafe files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PrismError(f"{ckpt_path} is not a loadable official checkpoint ({first_line})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise PrismError(f"{ckpt_path} is not an official PRISM checkpoint (needs 'model' and 'model_args')")
    cfg = _official_config(ckpt["model_args"])
    model = PrismLM(cfg)
    state = convert_official_state(ckpt["model"], cfg)
    load_state_strict(model, state, str(ckpt_path))
    extra = {"imported_from": {"path": str(ckpt_path), "iter_num": _plain(ckpt.get("iter_num")),
                               "best_val_loss": _plain(ckpt.get("best_val_loss"))}}
    with atomic_directory(out_dir) as tmp:
        write_model_files(tmp, model, extra)
    return out_dir


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value
