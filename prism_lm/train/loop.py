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
from prism_lm.config import TrainConfig, resolve_vocab_size
from prism_lm.data.loader import RandomWindows, make_loader
from prism_lm.data.shards import ShardSet
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM
from prism_lm.run_dir import RunDir
from prism_lm.train.metrics import MetricsWriter, flops_per_token, peak_flops
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


def train(cfg: TrainConfig, resume: str | None = None) -> dict:
    """Run (or continue) training as configured; returns a summary of the run."""
    world = init_world(cfg.run.device)
    try:
        return _train(cfg, resume, world)
    finally:
        close_world(world)


def _train(cfg: TrainConfig, resume: str | None, world) -> dict:
    device, run = world.device, RunDir(cfg.run.out_dir)
    train_data, val_data = ShardSet(cfg.data.dir, "train"), ShardSet(cfg.data.dir, "val")
    cfg.model.vocab_size = resolve_vocab_size(cfg.model.vocab_size, train_data.vocab_size)
    if cfg.run.grad_accum % world.size:
        raise PrismError(f"run.grad_accum ({cfg.run.grad_accum}) must be divisible by the world size ({world.size})")
    accum = cfg.run.grad_accum // world.size

    model = initial_model(cfg).to(device)
    # wrap before the optimizer exists: FSDP2 replaces parameters with sharded DTensors in place
    train_model = wrap_model(model, world, cfg.run.parallel, cfg.run.compile)
    optimizer, names = build_optimizer(model, cfg, device)
    loader = make_loader(cfg.data.sampler, train_data, cfg.run.batch_size, cfg.model.block_size, cfg.run.seed,
                         world.rank, world.size, device)
    metrics = MetricsWriter(run, cfg.run.tensorboard, enabled=world.is_main)
    step, best_val = 0, None
    if resume:
        ckpt = _resume_dir(run, resume)
        if ckpt is not None:
            meta = load_training_checkpoint(ckpt, model, optimizer, names)
            step, best_val = meta["step"], meta["best_val_loss"]
            loader.load_state_dict(meta["loader"])
            metrics.truncate_after(step)
    else:
        if run.holds_run():
            raise PrismError(f"{run.path} already holds a run; use --resume auto to continue it or a new run.out_dir")
    if step == 0:  # after the identical init: each rank's dropout stream differs (resume restores it)
        torch.manual_seed(cfg.run.seed + world.rank)
    if world.is_main and not run.config_path.exists():
        run.write_config(cfg)
    barrier(world)

    ctx = autocast_for(cfg, device)
    tokens_per_step = cfg.run.batch_size * cfg.model.block_size * cfg.run.grad_accum
    flops_step = flops_per_token(cfg.model, model.num_params(), cfg.model.block_size) * tokens_per_step
    peak = peak_flops(device)
    lambda_tmax = cfg.optim.lambda_anneal_iters or cfg.run.max_iters
    extra = {"tokenizer": train_data.codec().to_json()}
    progress = _progress_bar(cfg, world, step)
    last_log, last_log_step, last_saved = time.perf_counter(), step, step
    loss_sum = torch.zeros((), device=device)
    train_loss = float("nan")

    def save(at_step: int) -> Path:
        path = run.step_dir(at_step)
        save_training_checkpoint(path, model, optimizer, names, at_step, loader.state_dict(), best_val,
                                 {**extra, "step": at_step}, world.is_main)
        if world.is_main:
            run.prune(cfg.run.keep_checkpoints)
        barrier(world)
        return path

    def check_finite(value: float, at_step: int) -> None:
        if not math.isfinite(value):
            newest = run.newest()
            kept = f"last good checkpoint: {newest}" if newest else "no checkpoint was written"
            raise PrismError(f"training loss became {value} at step {at_step}; stopped ({kept})")

    def evaluate(at_step: int, lr: float, best: float | None) -> float | None:
        """Log an eval record; when val improves, ``best`` becomes a copy of the newest checkpoint."""
        if len(val_data) <= cfg.model.block_size + 1:
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
            if world.is_main and run.newest():
                run.replace_best(run.newest())
        return best

    model.train()
    with _StopFlag() as stop:
        while step < cfg.run.max_iters:
            lr = lr_at(step, cfg.optim)
            for group in optimizer.param_groups:
                group["lr"] = lr
            lam = prism_lambda_at(step, lambda_tmax, cfg.model.lambda_start, cfg.model.lambda_end)
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

            must_save = step % cfg.run.checkpoint_interval == 0 or step == cfg.run.max_iters or stop.signal
            if step % cfg.run.log_interval == 0 or must_save:
                n = step - last_log_step
                train_loss = all_reduce_mean(loss_sum / max(n, 1), world).item()
                check_finite(train_loss, step)
                now = time.perf_counter()
                tps = tokens_per_step * n / max(now - last_log, 1e-9)
                metrics.write({"type": "iter", "iter": step, "train_loss": train_loss, "lr": lr,
                               "grad_norm": _full_norm(grad_norm), "prism_lambda": _lambda(model),
                               "tokens_per_s": tps, "mfu": tps / tokens_per_step * flops_step / (peak * world.size)
                               if peak else None})
                progress.set_postfix(loss=f"{train_loss:.4f}", tok_s=f"{tps:,.0f}")
                last_log, last_log_step, loss_sum = now, step, torch.zeros((), device=device)
            progress.update(1)
            if must_save:
                save(step)
                last_saved = step
            if stop.signal:
                break
    progress.close()
    if last_saved != step:
        save(step)
    if not stop.signal and step % cfg.run.eval_interval == 0:  # the final evaluation, after the final save
        best_val = evaluate(step, lr_at(step, cfg.optim), best_val)
    metrics.close()
    return {"run_dir": str(run.path), "step": step, "train_loss": train_loss, "best_val_loss": best_val,
            "interrupted_by": stop.signal}


def _resume_dir(run: RunDir, resume: str) -> Path | None:
    if resume == "auto":
        return run.newest()
    path = Path(resume)
    if not path.is_dir():
        raise PrismError(f"--resume: checkpoint not found: {path}")
    return path


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


def _progress_bar(cfg: TrainConfig, world, step: int):
    from tqdm import tqdm

    enabled = cfg.run.progress and world.is_main and sys.stderr.isatty()
    return tqdm(total=cfg.run.max_iters, initial=step, unit="it", disable=not enabled, dynamic_ncols=True)
