"""Training checkpoints: everything needed to continue bit for bit, without pickle.

A checkpoint directory ``checkpoints/step-000200/`` holds
- ``model.safetensors`` + ``config.json``: a model checkpoint (``prism_lm.load_model`` reads it);
- ``train_state.safetensors``: optimizer moments keyed by parameter name, torch CPU/CUDA RNG states;
- ``train_state.json``: step, optimizer hyper-parameters, python and numpy RNG states, the data
  loader's state, the best validation loss so far.

Design choices: parameter names, not optimizer indices, key the optimizer state, so a mismatch is
reported by name. Under FSDP2 the sharded tensors (DTensor) are gathered to full tensors on save
and re-sharded on load; every rank takes part, rank 0 writes. Directories are written under a
temporary name and renamed (complete or absent); ``best`` is replaced by a rename too.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from prism_lm.checkpoint import (
    TIED_KEY,
    WEIGHTS,
    atomic_directory,
    load_state_strict,
    read_model_config,
    read_weights,
    write_model_files,
)
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM

STATE_FORMAT = "prism-lm/train-state/1"
STATE_TENSORS, STATE_JSON = "train_state.safetensors", "train_state.json"


def _full(t: torch.Tensor) -> torch.Tensor:
    if hasattr(t, "full_tensor"):  # DTensor under FSDP2: a collective, every rank calls it
        t = t.full_tensor()
    return t.detach().to("cpu").contiguous()


def _like(full: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``full`` placed like ``target`` (same device; same sharding when target is a DTensor)."""
    if hasattr(target, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(target.device_mesh.device_type), target.device_mesh, target.placements)
    return full.to(target.device)


def full_model_state(model: PrismLM) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    state.pop(TIED_KEY, None)
    return {k: _full(v) for k, v in state.items()}


def optimizer_state(optimizer: torch.optim.Optimizer, names: list[list[str]]) -> tuple[dict, dict]:
    """Tensors keyed ``optim.<param name>.<slot>`` and JSON-able hyper-parameters per group."""
    sd = optimizer.state_dict()
    flat_names = [n for group in names for n in group]
    ids = [i for g in sd["param_groups"] for i in g["params"]]
    tensors = {}
    for pid, name in zip(ids, flat_names, strict=True):
        for slot, value in sd["state"].get(pid, {}).items():
            tensors[f"optim.{name}.{slot}"] = _full(value) if torch.is_tensor(value) else torch.tensor(value)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "names": names}


def load_optimizer_state(optimizer: torch.optim.Optimizer, names: list[list[str]], tensors: dict, meta: dict,
                         params_by_name: dict[str, torch.Tensor], source: str) -> None:
    if meta["names"] != names:
        saved = {n for g in meta["names"] for n in g}
        current = {n for g in names for n in g}
        diff = sorted(saved ^ current) or ["(grouping differs)"]
        raise PrismError(f"{source}: optimizer parameters differ from the model's, first: {diff[0]}")
    state, pid = {}, 0
    for group in names:
        for name in group:
            slots = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.rsplit(".", 1)[0] == f"optim.{name}"}
            if slots:
                param = params_by_name[name]
                state[pid] = {s: (v if s == "step" else _like(v, param)) for s, v in slots.items()}
            pid += 1
    groups, start = [], 0
    for hyper, group in zip(meta["param_groups"], names, strict=True):
        groups.append({**hyper, "params": list(range(start, start + len(group)))})
        start += len(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> tuple[dict, dict]:
    tensors = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    meta = {"python": [version, list(internal), gauss],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return tensors, meta


def set_rng_state(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_training_checkpoint(directory: Path, model: PrismLM, optimizer, names: list[list[str]], step: int,
                             loader_state: dict, best_val_loss: float | None, extra: dict, is_writer: bool) -> None:
    """Gather on every rank; rank 0 (``is_writer``) writes ``directory`` atomically."""
    weights = full_model_state(model)
    optim_tensors, optim_meta = optimizer_state(optimizer, names)
    rng_tensors, rng_meta = rng_state()
    if not is_writer:
        return
    from safetensors.torch import save_file

    with atomic_directory(directory) as tmp:
        write_model_files(tmp, model, extra, weights=weights)
        save_file({**optim_tensors, **rng_tensors}, str(tmp / STATE_TENSORS))
        meta = {"format": STATE_FORMAT, "step": step, "optimizer": optim_meta, "rng": rng_meta,
                "loader": loader_state, "best_val_loss": best_val_loss}
        (tmp / STATE_JSON).write_text(json.dumps(meta) + "\n", encoding="utf-8")


def load_training_checkpoint(directory: Path, model: PrismLM, optimizer, names: list[list[str]]) -> dict:
    """Restore model, optimizer and RNG from ``directory``; returns the JSON state (step, loader, ...)."""
    cfg, _ = read_model_config(directory)
    if cfg != model.config:
        diff = next(k for k in vars(cfg) if getattr(cfg, k) != getattr(model.config, k))
        raise PrismError(f"{directory}: checkpoint model.{diff} = {getattr(cfg, diff)!r}, "
                         f"config says {getattr(model.config, diff)!r}")
    path = directory / STATE_JSON
    if not path.is_file():
        raise PrismError(f"{directory} is a model checkpoint without training state ({STATE_JSON} missing)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise PrismError(f"{path} is not valid JSON") from None
    if meta.get("format") != STATE_FORMAT:
        raise PrismError(f"{path} is not a prism-lm training state")
    weights = read_weights(directory / WEIGHTS)
    _load_weights(model, weights, str(directory / WEIGHTS))
    tensors = read_weights(directory / STATE_TENSORS)
    params = dict(model.named_parameters())
    load_optimizer_state(optimizer, names, tensors, meta["optimizer"], params, str(directory / STATE_TENSORS))
    set_rng_state(tensors, meta["rng"])
    return meta


def _load_weights(model: PrismLM, weights: dict, source: str) -> None:
    current = model.state_dict()
    if not any(hasattr(v, "device_mesh") for v in current.values()):
        load_state_strict(model, weights, source)
        return
    current.pop(TIED_KEY, None)
    for key, tensor in current.items():  # FSDP2: shard each full tensor like the live one
        if key not in weights or tuple(weights[key].shape) != tuple(tensor.shape):
            raise PrismError(f"{source}: tensor {key!r} missing or of the wrong shape")
        with torch.no_grad():
            tensor.copy_(_like(weights[key], tensor))


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete step checkpoints of a run, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / STATE_JSON).is_file())


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old)


def replace_best(run_dir: Path, source: Path) -> None:
    """Make ``checkpoints/best`` a copy of ``source``, swapped in by renames."""
    best = run_dir / "checkpoints" / "best"
    tmp = best.with_name(".best.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    old = best.with_name(".best.old")
    if best.exists():
        best.rename(old)
    tmp.rename(best)
    shutil.rmtree(old, ignore_errors=True)
