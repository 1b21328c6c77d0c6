"""Training checkpoints: everything needed to continue bit for bit, without pickle.

A checkpoint directory ``checkpoints/step-000200/`` holds
- ``model.safetensors`` + ``config.json``: a model checkpoint (``prism_lm.load_model`` reads it);
- ``train_state.safetensors``: optimizer moments keyed by parameter name, torch CPU/CUDA RNG states;
- ``train_state.json``: step, optimizer hyper-parameters, python and numpy RNG states, the data
  loader's state, the best validation loss so far, the training-loss window since the last log
  record, and the size and sha256 of the other three files, so ``verify_training_checkpoint``
  can tell a good checkpoint from a truncated or damaged one before resuming from it.

Design choices: parameter names, not optimizer indices, key the optimizer state, so a mismatch is
reported by name. Under FSDP2 the sharded tensors (DTensor) are gathered to full tensors on save
and re-sharded on load; every rank takes part, rank 0 writes. Directories are written under a
temporary name and renamed (complete or absent). Where checkpoints live in a run is ``RunDir``'s.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from prism_lm.checkpoint.model import (  # noqa: F401 (verify_training_checkpoint: its home was here)
    CONFIG,
    STATE_FORMAT,
    WEIGHTS,
    full_tensor,
    load_state,
    model_state,
    placed_like,
    read_model_config,
    read_weights,
    verify_training_checkpoint,
    write_model_files,
)
from prism_lm.errors import PrismError
from prism_lm.files import atomic_directory, file_digest, read_tagged_json, write_json
from prism_lm.model import PrismLM
from prism_lm.run_dir import STATE_JSON, STATE_TENSORS, RunDir


def optimizer_state(optimizer: torch.optim.Optimizer, names: list[list[str]]) -> tuple[dict, dict]:
    """Tensors keyed ``optim.<param name>.<slot>`` and JSON-able hyper-parameters per group."""
    sd = optimizer.state_dict()
    flat_names = [n for group in names for n in group]
    ids = [i for g in sd["param_groups"] for i in g["params"]]
    tensors = {}
    for pid, name in zip(ids, flat_names, strict=True):
        for slot, value in sd["state"].get(pid, {}).items():
            tensors[f"optim.{name}.{slot}"] = full_tensor(value) if torch.is_tensor(value) else torch.tensor(value)
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
                state[pid] = {s: (v if s == "step" else placed_like(v, param)) for s, v in slots.items()}
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
                             loader_state: dict, best_val_loss: float | None, extra: dict, is_writer: bool,
                             log_window: dict | None = None) -> None:
    """Gather on every rank; rank 0 (``is_writer``) writes ``directory`` atomically."""
    weights = model_state(model)
    optim_tensors, optim_meta = optimizer_state(optimizer, names)
    rng_tensors, rng_meta = rng_state()
    if not is_writer:
        return
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        with atomic_directory(directory) as tmp:
            write_model_files(tmp, model, extra, weights=weights)
            save_file({**optim_tensors, **rng_tensors}, str(tmp / STATE_TENSORS))
            meta = {"format": STATE_FORMAT, "step": step, "optimizer": optim_meta, "rng": rng_meta,
                    "loader": loader_state, "best_val_loss": best_val_loss, "log_window": log_window,
                    "files": {name: file_digest(tmp / name) for name in (WEIGHTS, CONFIG, STATE_TENSORS)}}
            write_json(tmp / STATE_JSON, meta, indent=None)  # last: its presence marks a finished write
    except (OSError, SafetensorError) as exc:  # disk full, quota, permissions: earlier checkpoints stay
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
        raise PrismError(f"could not write checkpoint {directory} ({reason}); "
                         "the previous checkpoints are intact") from None


def load_training_checkpoint(directory: Path, model: PrismLM, optimizer, names: list[list[str]]) -> dict:
    """Restore model, optimizer and RNG from ``directory``; returns the JSON state (step, loader, ...)."""
    cfg, _ = read_model_config(directory)
    if cfg != model.config:
        diff = next(k for k in vars(cfg) if getattr(cfg, k) != getattr(model.config, k))
        raise PrismError(f"{directory}: checkpoint model.{diff} = {getattr(cfg, diff)!r}, "
                         f"config says {getattr(model.config, diff)!r}")
    meta = read_tagged_json(directory / STATE_JSON, STATE_FORMAT, "a prism-lm training state",
                            missing=f"{directory} is a model checkpoint without training state ({STATE_JSON} missing)")
    weights = read_weights(directory / WEIGHTS)
    load_state(model, weights, str(directory / WEIGHTS))
    tensors = read_weights(directory / STATE_TENSORS)
    params = dict(model.named_parameters())
    load_optimizer_state(optimizer, names, tensors, meta["optimizer"], params, str(directory / STATE_TENSORS))
    set_rng_state(tensors, meta["rng"])
    return meta


def newest_verified(run: RunDir) -> Path | None:
    """The newest step checkpoint of ``run`` that verifies; broken ones on the way are moved aside
    with a warning (a step directory without its state never finished writing)."""
    for path in run.unfinished_steps():
        run.reject(path, f"{STATE_JSON} is missing")
    for path in reversed(run.steps()):
        problem = verify_training_checkpoint(path)
        if problem is None:
            return path
        run.reject(path, problem)
    return None
