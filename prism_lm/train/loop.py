"""The training loop: the paper's recipe, exactly resumable, from one CPU to many GPUs.

Order of one iteration at step s (the same fresh or resumed, which is what makes resume exact):
set lr(s) and λ(s); evaluate when s % eval_interval == 0; grad_accum micro-steps; clip (the
pre-clip norm is logged); AdamW step; s += 1; log; checkpoint when s % checkpoint_interval == 0.
Host syncs (``.item()``) happen only on log, eval and checkpoint steps; a non-finite loss found
there stops the run before anything is written, so the last checkpoint stays good.
SIGTERM/SIGINT finish the current step, save a checkpoint and return normally.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from pathlib import Path

import torch

from prism_lm.checkpoint.training import load_training_checkpoint, save_training_checkpoint
from prism_lm.config import TrainConfig, resolve_vocab_size, to_dict
from prism_lm.data.loader import RandomWindows, make_loader
from prism_lm.data.shards import ShardSet
from prism_lm.errors import DivergedError, PrismError, warn
from prism_lm.model import PrismLM
from prism_lm.run_dir import RunDir
from prism_lm.train.metrics import MetricsWriter, flops_per_token, peak_flops, read_metrics
from prism_lm.train.parallel import all_reduce_mean, barrier, close_world, init_world, wrap_model
from prism_lm.train.schedules import lr_at, prism_lambda_at


def optimizer_groups(model: PrismLM) -> tuple[list[list[str]], list[list[torch.nn.Parameter]]]:
    """(names, parameters) of two groups: decayed (>= 2 dims: matrices, embeddings), then not decayed."""
    decay = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    return [[n for n, _ in decay], [n for n, _ in no_decay]], [[p for _, p in decay], [p for _, p in no_decay]]


def build_optimizer(model: PrismLM, cfg: TrainConfig, device: torch.device):
    names, params = optimizer_groups(model)
    groups = [{"params": params[0], "weight_decay": cfg.optim.weight_decay},
              {"params": params[1], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2),
                            fused=device.type == "cuda")
    return opt, names


def autocast_for(cfg: TrainConfig, device: torch.device):
    dtype = cfg.run.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def estimate_loss(model: PrismLM, shards: ShardSet, cfg: TrainConfig, device, ctx, rank: int = 0,
                  world_size: int = 1) -> torch.Tensor:
    """Mean loss over ``eval_iters`` fixed random batches (the same windows at every evaluation)."""
    loader = RandomWindows(shards, cfg.run.batch_size, cfg.model.block_size, seed=cfg.run.seed + 7919,
                           rank=rank, world_size=world_size, device=device)
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device)
    for _ in range(cfg.run.eval_iters):
        x, y = loader.next_batch()
        with ctx:
            total += model(x, y, loss_chunk=cfg.run.loss_chunk).loss.float()
    model.train(was_training)
    return total / cfg.run.eval_iters


class _StopFlag:
    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        if sys.platform != "win32":
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(ValueError):  # not the main thread
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


def initial_model(cfg: TrainConfig) -> PrismLM:
    """The run's model at step 0: seeded with ``run.seed``, then built (the loop's first act).

    ``cfg.model.vocab_size`` must be resolved (a run's recorded config.toml is).
    """
    torch.manual_seed(cfg.run.seed)
    return PrismLM(cfg.model)


def train(cfg: TrainConfig, resume: str | None = None, allow_config_change: bool = False) -> dict:
    """Run (or continue) training as configured; returns a summary of the run.

    One training writes a run directory at a time (a lock; a second is refused). On resume the
    newest checkpoint that verifies is taken, and a config that differs from the run's recorded
    one in anything that would break exactness is refused unless ``allow_config_change``; what
    changed is then recorded in ``config_changes.jsonl``.
    """
    world = init_world(cfg.run.device)
    run = RunDir(cfg.run.out_dir)
    try:
        if not world.is_main:
            return _train(cfg, resume, allow_config_change, world, run)
        with run.writer_lock():
            run.clean_leftovers()
            return _train(cfg, resume, allow_config_change, world, run)
    finally:
        close_world(world)


# keys that change what is logged, saved or where it runs, never the numbers of the training itself
RESUME_SAFE_KEYS = {"run.out_dir", "run.device", "run.progress", "run.tensorboard", "run.log_interval",
                    "run.eval_interval", "run.eval_iters", "run.checkpoint_interval", "run.keep_checkpoints",
                    "run.parallel", "run.wandb"}


def _config_changes(recorded: TrainConfig, cfg: TrainConfig) -> dict[str, tuple]:
    old, new = to_dict(recorded), to_dict(cfg)
    return {f"{section}.{key}": (old[section][key], value) for section, values in new.items()
            for key, value in values.items() if old[section].get(key) != value}


def _train(cfg: TrainConfig, resume: str | None, allow_config_change: bool, world, run: RunDir) -> dict:
    device = world.device
    train_data, val_data = ShardSet(cfg.data.dir, "train"), ShardSet(cfg.data.dir, "val")
    cfg.model.vocab_size = resolve_vocab_size(cfg.model.vocab_size, train_data.vocab_size)
    train_data.check_fits(cfg.model.vocab_size)
    val_data.check_fits(cfg.model.vocab_size)
    if cfg.run.grad_accum % world.size:
        raise PrismError(f"run.grad_accum ({cfg.run.grad_accum}) must be divisible by the world size ({world.size})")
    has_val = len(val_data) > cfg.model.block_size + 1
    if not has_val and world.is_main:
        warn(f"the val split of {cfg.data.dir} has {len(val_data)} tokens, fewer than block_size + 1 = "
             f"{cfg.model.block_size + 1}: no validation loss will be computed")
    accum = cfg.run.grad_accum // world.size

    ckpt = None
    if resume:
        if resume != "auto":
            ckpt = Path(resume)
            if not ckpt.is_dir():
                raise PrismError(f"--resume: checkpoint not found: {ckpt}")
        else:
            if world.is_main:
                run.newest_verified()  # moves broken checkpoints aside, so every rank sees the same newest
            barrier(world)
            ckpt = run.newest()
    elif run.holds_run():
        raise PrismError(f"{run.path} already holds a run; use --resume auto to continue it or a new run.out_dir")
    recorded = run.read_config() if ckpt is not None else None
    changes = _config_changes(recorded, cfg) if recorded is not None else {}
    safe = RESUME_SAFE_KEYS | ({"run.max_iters"} if cfg.optim.lambda_anneal_iters else set())  # else λ's T_max
    breaking = sorted(k for k in changes if k not in safe)
    if breaking and not allow_config_change:
        key = breaking[0]
        raise PrismError(f"--resume: {key} is {changes[key][1]!r} but the run was started with {changes[key][0]!r}, "
                         "which would break an exact resume (pass --allow-config-change to continue anyway)")

    model = initial_model(cfg).to(device)
    # wrap before the optimizer exists: FSDP2 replaces parameters with sharded DTensors in place
    train_model = wrap_model(model, world, cfg.run.parallel, cfg.run.compile)
    optimizer, names = build_optimizer(model, cfg, device)
    loader = make_loader(cfg.data.sampler, train_data, cfg.run.batch_size, cfg.model.block_size, cfg.run.seed,
                         world.rank, world.size, device)
    step, best_val, window = 0, None, None
    if ckpt is not None:
        meta = load_training_checkpoint(ckpt, model, optimizer, names)
        step, best_val, window = meta["step"], meta["best_val_loss"], meta.get("log_window")
        loader.load_state_dict(meta["loader"])
    if ckpt is not None and step >= cfg.run.max_iters and not _final_eval_missing(run, step, cfg, has_val):
        return {"run_dir": str(run.path), "step": step, "train_loss": None, "best_val_loss": best_val,
                "interrupted_by": None, "already_finished": True}
    metrics = MetricsWriter(run, cfg.run.tensorboard, world.is_main, cfg.run.wandb, cfg.run.progress,
                            cfg.run.max_iters, step, to_dict(cfg))
    if resume:  # the log reads as one run: records after the checkpoint (and a partial last line) go
        metrics.truncate_after(step)
    if step == 0:  # after the identical init: each rank's dropout stream differs (resume restores it)
        torch.manual_seed(cfg.run.seed + world.rank)
    if world.is_main:  # the config the run really trains with, written when training really starts
        if changes:
            run.record_config_change(step, changes)
        run.write_config(cfg)
    barrier(world)

    ctx = autocast_for(cfg, device)
    tokens_per_step = cfg.run.batch_size * cfg.model.block_size * cfg.run.grad_accum
    flops_step = flops_per_token(cfg.model, model.num_params(), cfg.model.block_size) * tokens_per_step
    peak = peak_flops(device)
    lambda_tmax = cfg.optim.lambda_anneal_iters or cfg.run.max_iters
    extra = {"tokenizer": train_data.codec().to_json()}
    # the training losses since the last iter record (restored on resume, so the next mean is the same)
    last_log_step = window["since"] if window else step
    loss_sum = torch.tensor(window["loss_sum"] if window else 0.0, device=device)
    last_log, last_saved, train_loss = time.perf_counter(), step, float("nan")

    def save(at_step: int) -> Path:
        path = run.step_dir(at_step)
        window_state = {"loss_sum": float(loss_sum), "since": last_log_step}
        save_training_checkpoint(path, model, optimizer, names, at_step, loader.state_dict(), best_val,
                                 {**extra, "step": at_step}, world.is_main, window_state)
        if world.is_main:
            run.prune(cfg.run.keep_checkpoints)
        barrier(world)
        return path

    def check_finite(value: float, at_step: int) -> None:
        if not math.isfinite(value):
            good = run.newest_verified() if world.is_main else None
            kept = f"last good checkpoint: {good}" if good else "no verified checkpoint"
            raise DivergedError(f"training loss became {value} at step {at_step}; stopped ({kept})")

    def evaluate(at_step: int, lr: float, best: float | None) -> float | None:
        """Log an eval record; when val improves, ``best`` becomes a copy of the newest checkpoint."""
        if not has_val:
            return best
        val_loss = all_reduce_mean(estimate_loss(model, val_data, cfg, device, ctx, world.rank, world.size),
                                   world).item()
        tr_loss = all_reduce_mean(estimate_loss(model, train_data, cfg, device, ctx, world.rank, world.size),
                                  world).item()
        check_finite(val_loss, at_step)
        metrics.write({"type": "eval", "iter": at_step, "train_loss": tr_loss, "val_loss": val_loss,
                       "lr": lr, "prism_lambda": _lambda(model)})
        if at_step > 0 and (best is None or val_loss < best):
            best = val_loss
            newest = run.newest() if world.is_main else None
            if newest:
                run.replace_best(newest)
        return best

    model.train()
    with _StopFlag() as stop:
        while step < cfg.run.max_iters:
            lr = lr_at(step, cfg.optim)
            for group in optimizer.param_groups:
                group["lr"] = lr
            lam = prism_lambda_at(step, lambda_tmax, cfg.model.lambda_start, cfg.model.lambda_end,
                                 cfg.model.lambda_schedule)
            model.set_scheduled_lambda(lam)
            if step % cfg.run.eval_interval == 0:
                best_val = evaluate(step, lr, best_val)

            for micro in range(accum):
                _set_grad_sync(train_model, micro == accum - 1)
                x, y = loader.next_batch()
                with ctx:
                    loss = train_model(x, y, loss_chunk=cfg.run.loss_chunk).loss / accum
                loss.backward()
                loss_sum += loss.detach()
            clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            scheduled_save = step % cfg.run.checkpoint_interval == 0 or step == cfg.run.max_iters
            log_step = step % cfg.run.log_interval == 0 or scheduled_save
            if log_step or stop.signal:  # an unscheduled stop checks the loss but writes no record
                n = step - last_log_step
                window_loss = all_reduce_mean(loss_sum / max(n, 1), world).item()
                check_finite(window_loss, step)
            if log_step:
                train_loss = window_loss
                now = time.perf_counter()
                tps = tokens_per_step * n / max(now - last_log, 1e-9)
                metrics.write({"type": "iter", "iter": step, "train_loss": train_loss, "lr": lr,
                               "grad_norm": _full_norm(grad_norm), "prism_lambda": _lambda(model),
                               "tokens_per_s": tps, "mfu": tps / tokens_per_step * flops_step / (peak * world.size)
                               if peak else None})
                last_log, last_log_step, loss_sum = now, step, torch.zeros((), device=device)
            metrics.advance()
            if scheduled_save or stop.signal:
                save(step)
                last_saved = step
            if stop.signal:
                break
    if last_saved != step:
        save(step)
    if not stop.signal and step % cfg.run.eval_interval == 0:  # the final evaluation, after the final save
        best_val = evaluate(step, lr_at(step, cfg.optim), best_val)
    metrics.close()
    return {"run_dir": str(run.path), "step": step, "train_loss": train_loss, "best_val_loss": best_val,
            "interrupted_by": stop.signal}


def _final_eval_missing(run: RunDir, step: int, cfg: TrainConfig, has_val: bool) -> bool:
    """A finished run killed between its final save and its final evaluation still owes that record."""
    if not has_val or step % cfg.run.eval_interval or not run.metrics_path.is_file():
        return False
    return not any(r.get("type") == "eval" and r["iter"] == step for r in read_metrics(run.metrics_path))


def _set_grad_sync(module, sync: bool) -> None:
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(sync)
    elif hasattr(module, "require_backward_grad_sync"):  # DDP
        module.require_backward_grad_sync = sync


def _full_norm(norm: torch.Tensor) -> float:
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def _lambda(model: PrismLM) -> float | None:
    lambdas = model.lambdas()
    return sum(lambdas) / len(lambdas) if lambdas else None
