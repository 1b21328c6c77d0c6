"""Model checkpoints without pickle: ``model.safetensors`` + ``config.json``.

Design choices:
- A checkpoint is a directory. ``config.json`` holds ``{"format": ..., "model": ModelConfig,
  "tokenizer": codec record}``; weights are safetensors with the tied LM head stored once (as
  ``wte.weight``).
- A checkpoint knows its codec (text <-> ids): ``load_codec`` is the one reader of that record,
  and every command that takes or prints text uses it.
- Writing goes through ``files.atomic_directory``: complete or absent, never overwritten.
- Loading checks every key and shape before touching the model and names the first mismatch.
  Under FSDP2 (DTensor parameters) the same function shards each full tensor like the live one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prism_lm.bounds import MAX_POSITIONS, bounded_int, finite_float
from prism_lm.config import ModelConfig, TrainConfig, apply_overrides, flatten, from_dict, to_dict
from prism_lm.data.tokenizer import GPT2_VOCAB, Codec
from prism_lm.errors import PrismError
from prism_lm.files import atomic_directory, file_digest, read_tagged_json, write_json
from prism_lm.model import PrismLM
from prism_lm.model.config import with_prism
from prism_lm.model.kinds import validate_model
from prism_lm.run_dir import MODEL_CONFIG as CONFIG
from prism_lm.run_dir import MODEL_WEIGHTS as WEIGHTS
from prism_lm.run_dir import STATE_JSON, STATE_TENSORS, resolve_checkpoint_dir

FORMAT = "prism-lm/model/1"
STATE_FORMAT = "prism-lm/train-state/1"  # a training checkpoint's train_state.json (checkpoint.training)
TIED_KEY = "lm_head.weight"


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` whole, detached, contiguous, on CPU (a DTensor shard under FSDP2 is gathered: every rank calls)."""
    if hasattr(t, "full_tensor"):
        t = t.full_tensor()
    return t.detach().to("cpu").contiguous()


def placed_like(full: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``full`` placed like ``target`` (same device; same sharding when target is a DTensor)."""
    if hasattr(target, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(target.device_mesh.device_type), target.device_mesh, target.placements)
    return full.to(target.device)


def model_state(model: PrismLM) -> dict[str, torch.Tensor]:
    """Persistent tensors, tied head dropped, whole, on CPU."""
    state = model.state_dict()
    state.pop(TIED_KEY, None)
    return {k: full_tensor(v) for k, v in state.items()}


def write_model_files(directory: Path, model: PrismLM, extra: dict[str, Any] | None = None,
                      weights: dict[str, torch.Tensor] | None = None) -> None:
    """Write weights (``model_state(model)`` unless given) and config.json into an existing directory."""
    from safetensors.torch import save_file

    save_file(weights if weights is not None else model_state(model), str(directory / WEIGHTS),
              metadata={"format": FORMAT})
    write_json(directory / CONFIG, {"format": FORMAT, "model": to_dict(model.config), **(extra or {})})


def save_model(model: PrismLM, directory: str | Path, codec: Codec | None = None) -> Path:
    """Save weights + config (and the codec, when given) to a new directory (complete or absent)."""
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        write_model_files(tmp, model, {"tokenizer": codec.to_json()} if codec is not None else None)
    return directory


def initial_model(cfg: TrainConfig) -> PrismLM:
    """A run's model at step 0: seeded with ``run.seed``, then built (the training loop's first act;
    the analysis and the sweep job rebuild the untrained baseline with it).

    ``cfg.model.vocab_size`` must be resolved (a run's recorded config.toml is).
    """
    torch.manual_seed(cfg.run.seed)
    return PrismLM(cfg.model)


def read_model_config(directory: Path) -> tuple[ModelConfig, dict[str, Any]]:
    meta = read_tagged_json(directory / CONFIG, FORMAT, "a prism-lm model config",
                            missing=f"not a checkpoint: {directory / CONFIG} is missing")
    if "model" not in meta:
        raise PrismError(f"{directory / CONFIG} has no model section")
    cfg = from_dict(ModelConfig, meta["model"], "model")  # an earlier release's flat keys too
    validate_model(cfg)
    return cfg, meta


def load_codec(path: str | Path) -> Codec | None:
    """The codec of a checkpoint (or a run's): its recorded tokenizer, else GPT-2 BPE when the
    vocabulary covers GPT-2's, else None (a model of bare token ids)."""
    return _codec_of(*read_model_config(resolve_checkpoint_dir(path)))


def _codec_of(cfg: ModelConfig, meta: dict[str, Any]) -> Codec | None:
    if meta.get("tokenizer"):
        return Codec.from_json(meta["tokenizer"])
    return Codec() if cfg.vocab_size >= GPT2_VOCAB else None


def check_same_tokenizer(checkpoint: str | Path, data_dir: str | Path, codec: Codec | None = None) -> None:
    """Refuse a data folder whose tokenizer is not the checkpoint's (not only its size: a compact map
    of another corpus has other ids). A checkpoint with no recorded tokenizer is GPT-2 BPE when its
    vocabulary holds GPT-2's (``load_codec``); one of bare ids is checked by size only."""
    from prism_lm.data.shards import read_manifest

    directory = resolve_checkpoint_dir(checkpoint)
    mine = codec or load_codec(directory)
    if mine is None:
        return
    theirs = Codec.from_json(read_manifest(data_dir).get("tokenizer"))
    if mine.token_map != theirs.token_map:
        raise PrismError(f"{data_dir} was tokenized with {_describe(theirs)}, but {directory} with {_describe(mine)}: "
                         "the ids mean different tokens; use data prepared with the checkpoint's tokenizer")


def _describe(codec: Codec) -> str:
    return "GPT-2 BPE" if codec.token_map is None else f"a compact GPT-2 vocabulary of {codec.vocab_size} ids"


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise PrismError(f"not a checkpoint: {path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PrismError(f"{path} is not a readable safetensors file ({exc})") from None


def load_state(model: PrismLM, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` (whole tensors) into ``model`` after checking that keys and shapes match exactly."""
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
    with torch.no_grad():
        for key, tensor in expected.items():
            tensor.copy_(placed_like(state[key], tensor))


# what ``--set`` may change at evaluation: keys that keep every trained weight valid (the flat names
# of earlier releases, model.freq_multiplier and so on, still work with a notice)
EVAL_KEYS = {
    "model.prism.freq_multiplier": "the RoPE multiplier m (the rotation tables are recomputed; the weights stay)",
    "model.prism.rope_scaling": "base or frequency scaling of the two streams' RoPE",
    "model.prism.lambda_start": "λ held at this value in every layer that has one (learned λ too)",
    "model.block_size": "a longer context, for models without a learned position embedding",
}


def load_model(path: str | Path, device: str | torch.device = "cpu", overrides: list[str] = ()) -> PrismLM:
    """Load a checkpoint (or a run's best/newest one); the model is returned in eval mode. A training
    checkpoint is verified against the sizes and sha256 it recorded, and non-finite weights are refused.

    ``overrides``: ``model.KEY=VALUE`` evaluation-time changes (the keys of ``EVAL_KEYS``)."""
    directory = resolve_checkpoint_dir(path)
    if (directory / STATE_JSON).is_file():  # a training checkpoint records its files' sizes and sha256
        problem = verify_training_checkpoint(directory)
        if problem:
            raise PrismError(f"checkpoint {directory} fails verification: {problem}")
    cfg, meta = read_model_config(directory)
    changes = eval_overrides(cfg, overrides)
    lam, positions = changes.pop("model.prism.lambda_start", None), changes.pop("model.block_size", None)
    if changes:  # the RoPE keys of [model.prism]: a new config, the same weights
        cfg = with_prism(cfg, **{key.rsplit(".", 1)[1]: value for key, value in changes.items()})
        validate_model(cfg)
    state = read_weights(directory / WEIGHTS)
    refuse_non_finite(state, f"checkpoint {directory}")
    model = PrismLM(cfg)
    load_state(model, state, str(directory / WEIGHTS))
    model.codec = _codec_of(cfg, meta)  # text entry points (capture_attention, ...) encode with it
    if positions is not None:
        model.extend_positions(positions)
    if lam is not None:
        hold_lambda(model, float(lam))
    model.eval_overrides = list(overrides)
    return model.to(device).eval()


def open_on_data(path: str | Path, data_dir: str | Path | None = None, device: str = "cpu",
                 overrides: list[str] = ()) -> tuple[PrismLM, Path, str]:
    """A checkpoint's model (or a run's best) on ``device`` with ``load_model``'s evaluation-time
    ``overrides``, its directory, and the data folder to score it on: ``data_dir``, or (None) the
    folder its run recorded. A data folder of another tokenizer is refused in one line. The one way
    eval, ablate and analyze open what they measure."""
    from prism_lm.devices import resolve_device
    from prism_lm.run_dir import recorded_data_dir

    directory = resolve_checkpoint_dir(path)
    data = str(data_dir or recorded_data_dir(directory))
    check_same_tokenizer(directory, data)
    return load_model(directory, device=resolve_device(device), overrides=overrides), directory, data


def refuse_non_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """A one-line error naming the first tensor with NaN or infinite values (every load, every import)."""
    broken = next((k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if broken is not None:
        raise PrismError(f"{where}: tensor {broken!r} holds NaN or infinite values (a diverged run?); "
                         "nothing is computed from it")


def eval_overrides(cfg: ModelConfig, overrides: list[str]) -> dict[str, Any]:
    """``model.KEY=VALUE`` strings -> {"model.KEY": value}, each an ``EVAL_KEYS`` key with a valid value."""
    out = {}
    for item in overrides:
        key = item.partition("=")[0].strip()
        flat = flatten(apply_overrides({}, [item])) if key.startswith("model.") else {}  # old names moved
        if len(flat) != 1 or next(iter(flat)) not in EVAL_KEYS:
            raise PrismError(f"--set {key}: at evaluation only {', '.join(EVAL_KEYS)} can be set "
                             "(the others would change the trained weights)")
        out.update(flat)
    lam = "model.prism.lambda_start"
    if lam in out:
        out[lam] = finite_float(out[lam], f"--set {lam}")
    positions = out.get("model.block_size")
    if positions is not None:
        bounded_int(positions, "--set model.block_size", 1, MAX_POSITIONS, high_open=False)
        if positions < cfg.block_size:
            raise PrismError(f"--set model.block_size can only grow the context ({cfg.block_size} trained)")
    return out


def hold_lambda(model: PrismLM, lam: float) -> None:
    """λ held at ``lam`` in every layer that has one, for the model's life (an intervention that
    stays; ``intervene`` blocks inside it compose with it)."""
    from prism_lm.model.interventions import Edit

    blocks = [b for b in model.blocks if b.attn.own_lambda() is not None]
    if not blocks:
        raise PrismError(f"{model.config.attention} attention has no λ to set (model.prism.lambda_start)")
    for b in blocks:
        b.attn.edit = Edit(lam=lam)


def verify_training_checkpoint(directory: Path) -> str | None:
    """None for a complete, undamaged training checkpoint; else what is wrong with it."""
    try:
        meta = read_tagged_json(directory / STATE_JSON, STATE_FORMAT, "a prism-lm training state",
                                missing=f"{STATE_JSON} is missing")
    except PrismError as exc:
        return str(exc)
    for name, expected in (meta.get("files") or {}).items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, {expected['bytes']} were written"
        if file_digest(path)["sha256"] != expected["sha256"]:
            return f"{name} does not match the sha256 recorded when it was written"
    if not meta.get("files"):  # written before checksums were recorded: check that the files read
        try:
            read_model_config(directory)
            read_weights(directory / WEIGHTS)
            read_weights(directory / STATE_TENSORS)
        except PrismError as exc:
            return str(exc)
    return None
