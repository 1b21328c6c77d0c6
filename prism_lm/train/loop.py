"""The training loop: the paper's recipe, exactly resumable, from one CPU to many GPUs.

Order of one iteration at step s (the same fresh or resumed, which is what makes resume exact):
set lr(s) and λ(s); evaluate when s % eval_interval == 0; grad_accum micro-steps; clip (the
pre-clip norm is logged); AdamW step; s += 1; log; checkpoint when s % checkpoint_interval == 0.
Host syncs (``.item()``) happen only on log, eval and checkpoint steps; a non-finite loss found
there stops the run before anything is written, so the last checkpoint stays good.
SIGTERM/SIGINT/SIGHUP finish the current step, save a checkpoint and return normally.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from prism_lm.checkpoint.model import initial_model, read_model_config
from prism_lm.checkpoint.training import (
    load_training_checkpoint,
    newest_verified,
    save_training_checkpoint,
    verify_training_checkpoint,
)
from prism_lm.config import RESUME_SAFE_KEYS, TrainConfig, resolve_vocab_size, to_dict
from prism_lm.data.loader import RandomWindows, make_loader
from prism_lm.data.shards import ShardSet, data_fingerprint, training_splits
from prism_lm.errors import DivergedError, PrismError, warn
from prism_lm.model import PrismLM
from prism_lm.run_dir import RunDir
from prism_lm.train.metrics import MetricsWriter, flops_per_token, peak_flops
from prism_lm.train.parallel import all_reduce_mean, barrier, close_world, init_world, wrap_model
from prism_lm.train.schedules import horizons_follow_max_iters, lambda_at, lr_at


def optimizer_groups(model: PrismLM) -> tuple[list[list[str]], list[list[torch.nn.Parameter]]]:
    """(names, parameters) of two groups: decayed (>= 2 dims: matrices, embeddings), then not decayed."""
    decay = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    return [[n for n, _ in decay], [n for n, _ in no_decay]], [[p for _, p in decay], [p for _, p in no_decay]]


def build_optimizer(model: PrismLM, cfg: TrainConfig, device: torch.device):
    names, params = optimizer_groups(model)
    groups = [{"params": params[0], "weight_decay": cfg.optim.weight_decay},
              {"params": params[1], "weight_decay": 0.0}]
    # fused: one kernel over all parameters; on CPU too (1.018x the whole training step of the
    # paper-width model, paired rounds, benchmarks/RESULTS.md), except over FSDP's DTensors there
    fused = device.type == "cuda" or (device.type == "cpu" and cfg.run.parallel != "fsdp")
    opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2), fused=fused)
    return opt, names


def autocast_for(cfg: TrainConfig, device: torch.device):
    dtype = cfg.run.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def eval_windows(shards: ShardSet, cfg: TrainConfig, device, rank: int = 0, world_size: int = 1) -> RandomWindows:
    """The fixed random batches ``estimate_loss`` reads from ``shards``: with ``data.sampler = "bos"``,
    windows that start at a BOS as the training windows do; with ``data.loss_on = "answers"``, scored
    on the answers as training scores them. Built once per run (finding the BOS offsets and the
    windows with an answer reads the whole split)."""
    return RandomWindows(shards, cfg.run.batch_size, cfg.model.block_size, seed=cfg.run.seed + 7919,
                         rank=rank, world_size=world_size, device=device, bos=cfg.data.sampler == "bos",
                         answers=cfg.data.loss_on == "answers")


@torch.no_grad()
def estimate_loss(model: PrismLM, loader: RandomWindows, cfg: TrainConfig, ctx) -> torch.Tensor:
    """Mean loss over ``eval_iters`` batches of ``loader`` (``eval_windows``), rewound first, so every
    evaluation reads the same windows."""
    loader.batches = 0
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=loader.device)
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
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # SIGHUP: the terminal went away
                with contextlib.suppress(ValueError):  # not the main thread
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


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


def _train(cfg: TrainConfig, resume: str | None, allow_config_change: bool, world, run: RunDir) -> dict:
    """The steps of one training, in the order that makes a resume exact."""
    data = _open_data(cfg, world)
    ckpt = _checkpoint_to_resume(run, resume, world)
    changes = _config_changes(run, ckpt, cfg, allow_config_change)
    if resume and ckpt is None and run.holds_run():  # stopped before its first checkpoint: keep its records
        if world.is_main:
            warn(f"--resume {resume}: {run.path} saved no checkpoint before it stopped; the run so far is kept in "
                 f"{run.move_aside()}; starting at step 0")
        barrier(world)
    trainer = _Trainer(cfg, world, run, data)
    if ckpt is not None:
        trainer.restore(ckpt)
        if trainer.step >= cfg.run.max_iters and not _final_eval_missing(run, trainer.step, cfg, data.has_val):
            if world.is_main:
                _catch_up_best(run, trainer.step)
            return {**trainer.summary(None), "train_loss": None, "already_finished": True}
    trainer.open_metrics(truncate=bool(resume))
    if trainer.step == 0:  # after the identical init: each rank's dropout stream differs (resume restores it)
        torch.manual_seed(cfg.run.seed + world.rank)
    if world.is_main:  # the config the run really trains with, written when training really starts
        if changes:
            run.record_config_change(trainer.step, changes)
        run.write_config(cfg)
    barrier(world)
    return trainer.run()


EVAL_COVERAGE = 1000  # an evaluation reading the val split this many times over is a typo (the demo reads it 32x)


@dataclass
class _Data:
    train: ShardSet
    val: ShardSet
    has_val: bool
    fingerprint: str  # recorded in each checkpoint: a resume may find the same tokens in another folder


def _open_data(cfg: TrainConfig, world) -> _Data:
    """The splits, with the vocabulary resolved against them and the world size checked."""
    train_data, val_data = training_splits(cfg.data.dir, cfg.data.holdout)
    cfg.model.vocab_size = resolve_vocab_size(cfg.model.vocab_size, train_data.vocab_size)
    train_data.check_fits(cfg.model.vocab_size)
    val_data.check_fits(cfg.model.vocab_size)
    if cfg.run.grad_accum % world.size:
        raise PrismError(f"run.grad_accum ({cfg.run.grad_accum}) must be divisible by the world size ({world.size})")
    if len(train_data) <= cfg.model.block_size:
        raise PrismError(f"model.block_size = {cfg.model.block_size:,} needs windows of {cfg.model.block_size + 1:,} "
                         f"tokens, but the train split of {cfg.data.dir} holds {len(train_data):,}")
    has_val = len(val_data) > cfg.model.block_size + 1
    evaluated = cfg.run.eval_iters * cfg.run.batch_size * cfg.model.block_size
    if has_val and evaluated > EVAL_COVERAGE * len(val_data):
        raise PrismError(f"run.eval_iters = {cfg.run.eval_iters:,} reads {evaluated:,} tokens per evaluation, more "
                         f"than {EVAL_COVERAGE} times the val split ({len(val_data):,} tokens): lower it")
    if cfg.optim.warmup_iters >= cfg.run.max_iters and world.is_main:
        warn(f"optim.warmup_iters = {cfg.optim.warmup_iters:,} >= run.max_iters = {cfg.run.max_iters:,}: the whole run "
             "is learning-rate warm-up (the rate never reaches optim.lr); lower optim.warmup_iters for a real run")
    if not has_val and world.is_main:
        warn(f"the val split of {cfg.data.dir} has {len(val_data)} tokens, fewer than block_size + 1 = "
             f"{cfg.model.block_size + 1}: no validation loss will be computed")
    return _Data(train_data, val_data, has_val, data_fingerprint(cfg.data.dir))


def _checkpoint_to_resume(run: RunDir, resume: str | None, world) -> Path | None:
    """The checkpoint ``--resume`` names (``auto``: the newest that verifies, else a verified ``best``;
    ``never``: none, the run so far moved aside); None to start afresh. A run with history whose
    checkpoints all fail verification is refused, never silently restarted."""
    if not resume:
        if run.holds_run():
            raise PrismError(f"{run.path} already holds a run; use --resume auto to continue it, --resume never to "
                             "start over (the old run is kept in previous-N/) or a new run.out_dir")
        return None
    if resume == "never":
        if world.is_main and run.holds_run():
            warn(f"--resume never: the run so far is kept in {run.move_aside()}; starting at step 0")
        barrier(world)
        return None
    if resume != "auto":
        ckpt = Path(resume)
        if not ckpt.is_dir():
            raise PrismError(f"--resume: checkpoint not found: {ckpt}")
        return ckpt
    if world.is_main:
        newest_verified(run)  # moves broken checkpoints aside, so every rank sees the same newest
    barrier(world)
    newest = run.newest()
    if newest is not None or not run.had_checkpoints():  # a run that never saved one restarts at step 0
        return newest
    if run.best.is_dir() and verify_training_checkpoint(run.best) is None:
        if world.is_main:
            warn(f"no step checkpoint of {run.path} verifies; resuming from checkpoints/best")
        return run.best
    raise PrismError(f"--resume auto: {run.path} holds a run but none of its checkpoints verifies (moved aside as "
                     ".rejected-*; no verified best): nothing to resume from; --resume never starts over on "
                     "purpose (the old run is kept), or choose a new run.out_dir")


def _config_changes(run: RunDir, ckpt: Path | None, cfg: TrainConfig, allowed: bool) -> dict[str, tuple]:
    """What differs from the run's recorded config, whenever the run has a record (a checkpoint, verified
    or not, metrics, or its config); a change that breaks exactness is refused unless allowed, so a run
    killed before its first checkpoint is not continued under another config by accident either."""
    recorded = run.read_config() if ckpt is not None or run.had_checkpoints() or run.holds_run() else None
    changes = recorded.changed_keys(cfg) if recorded is not None else {}
    safe = RESUME_SAFE_KEYS | (set() if horizons_follow_max_iters(cfg) else {"run.max_iters"})
    if "data.dir" in changes and ckpt is not None and _same_tokens(ckpt, cfg.data.dir):
        safe |= {"data.dir"}  # the data moved (a copied run or sweep folder), its tokens did not
    breaking = sorted(k for k in changes if k not in safe)
    if breaking and not allowed:
        key = breaking[0]
        raise PrismError(f"--resume: {key} is {changes[key][1]!r} but the run was started with {changes[key][0]!r}, "
                         "which would break an exact resume (pass --allow-config-change to continue anyway)")
    return changes


def _same_tokens(ckpt: Path, data_dir: str) -> bool:
    """Whether ``data_dir`` holds the tokens ``ckpt`` was trained on (the fingerprint it recorded)."""
    recorded = read_model_config(ckpt)[1].get("data_fingerprint")
    return recorded is not None and recorded == data_fingerprint(data_dir)


class _Trainer:
    """One process's training: the model, its optimizer and sampler, the step and the loss window."""

    train_loss = float("nan")

    def __init__(self, cfg: TrainConfig, world, run: RunDir, data: _Data):
        self.cfg, self.world, self.run_dir, self.data = cfg, world, run, data
        self.device = world.device
        self.model = initial_model(cfg).to(self.device)
        # wrap before the optimizer exists: FSDP2 replaces parameters with sharded DTensors in place
        self.train_model = wrap_model(self.model, world, cfg.run.parallel, cfg.run.compile)
        self.optimizer, self.names = build_optimizer(self.model, cfg, self.device)
        self.loader = make_loader(cfg.data.sampler, data.train, cfg.run.batch_size, cfg.model.block_size,
                                  cfg.run.seed, world.rank, world.size, self.device,
                                  answers=cfg.data.loss_on == "answers")
        self.eval_loaders = None  # built at the first evaluation (eval_windows)
        self.step, self.best_val, self.metrics = 0, None, None
        self.ctx = autocast_for(cfg, self.device)
        self.tokens_per_step = cfg.run.batch_size * cfg.model.block_size * cfg.run.grad_accum
        self.flops_per_step = flops_per_token(cfg.model, cfg.model.block_size) * self.tokens_per_step
        self.peak = peak_flops(self.device)
        self.extra = {"tokenizer": data.train.codec().to_json(), "data_fingerprint": data.fingerprint}
        self._open_window(self.step, 0.0)

    def _open_window(self, since: int, loss_sum: float) -> None:
        """The training losses since the last iter record (restored on resume, so the next mean is the same)."""
        self.last_log_step, self.last_log = since, time.perf_counter()
        self.loss_sum = torch.tensor(loss_sum, device=self.device)

    def restore(self, ckpt: Path) -> None:
        meta = load_training_checkpoint(ckpt, self.model, self.optimizer, self.names)
        self.step, self.best_val, window = meta["step"], meta["best_val_loss"], meta.get("log_window")
        self.loader.load_state_dict(meta["loader"])
        self._open_window(window["since"] if window else self.step, window["loss_sum"] if window else 0.0)

    def open_metrics(self, truncate: bool) -> None:
        cfg = self.cfg
        self.metrics = MetricsWriter(self.run_dir, cfg.run.tensorboard, self.world.is_main, cfg.run.wandb,
                                     cfg.run.progress, cfg.run.max_iters, self.step, to_dict(cfg))
        if truncate:  # the log reads as one run: records after the checkpoint (and a partial last line) go
            self.metrics.truncate_after(self.step)

    def summary(self, interrupted_by: str | None) -> dict:
        return {"run_dir": str(self.run_dir.path), "step": self.step, "train_loss": self.train_loss,
                "best_val_loss": self.best_val, "interrupted_by": interrupted_by}

    def run(self) -> dict:
        """Train to ``max_iters`` (or a stop signal), save, and evaluate at the end."""
        cfg, last_saved = self.cfg, self.step
        self.model.train()
        with _StopFlag() as stop:
            while self.step < cfg.run.max_iters:
                lr = self._set_schedules()
                if self.step % cfg.run.eval_interval == 0:
                    self.evaluate(lr)
                grad_norm = self._optimizer_step()
                scheduled_save = self.step % cfg.run.checkpoint_interval == 0 or self.step == cfg.run.max_iters
                log_step = self.step % cfg.run.log_interval == 0 or scheduled_save
                if log_step or stop.signal:  # an unscheduled stop checks the loss but writes no record
                    window_loss = self._window_loss()
                if log_step:
                    self._log(window_loss, lr, grad_norm)
                self.metrics.advance()
                if scheduled_save or stop.signal:
                    self.save()
                    last_saved = self.step
                if stop.signal:
                    break
        if last_saved != self.step:
            self.save()
        if not stop.signal and self.step % cfg.run.eval_interval == 0:  # the final evaluation, after the final save
            self.evaluate(lr_at(self.step, cfg))
        self.metrics.close()
        return self.summary(stop.signal)

    def _set_schedules(self) -> float:
        lr = lr_at(self.step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        lam = lambda_at(self.step, self.cfg)
        if lam is not None:
            self.model.set_scheduled_lambda(lam)
        return lr

    def _optimizer_step(self) -> torch.Tensor:
        """grad_accum micro-steps, clipping (the pre-clip norm is returned), the AdamW step; step += 1."""
        accum = self.cfg.run.grad_accum // self.world.size
        for micro in range(accum):
            _set_grad_sync(self.train_model, micro == accum - 1)
            x, y = self.loader.next_batch()
            with self.ctx:
                loss = self.train_model(x, y, loss_chunk=self.cfg.run.loss_chunk).loss / accum
            loss.backward()
            self.loss_sum += loss.detach()
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return grad_norm

    def _window_loss(self) -> float:
        n = self.step - self.last_log_step
        window_loss = all_reduce_mean(self.loss_sum / max(n, 1), self.world).item()
        self._check_finite(window_loss)
        return window_loss

    def _log(self, window_loss: float, lr: float, grad_norm: torch.Tensor) -> None:
        self.train_loss = window_loss
        now = time.perf_counter()
        tps = self.tokens_per_step * (self.step - self.last_log_step) / max(now - self.last_log, 1e-9)
        mfu = tps / self.tokens_per_step * self.flops_per_step / (self.peak * self.world.size) if self.peak else None
        self.metrics.write({"type": "iter", "iter": self.step, "train_loss": window_loss, "lr": lr,
                            "grad_norm": _full_norm(grad_norm), "prism_lambda": _lambda(self.model),
                            "tokens_per_s": tps, "mfu": mfu})
        self._open_window(self.step, 0.0)

    def save(self) -> Path:
        path = self.run_dir.step_dir(self.step)
        window_state = {"loss_sum": float(self.loss_sum), "since": self.last_log_step}
        save_training_checkpoint(path, self.model, self.optimizer, self.names, self.step, self.loader.state_dict(),
                                 self.best_val, {**self.extra, "step": self.step}, self.world.is_main, window_state)
        if self.world.is_main:
            self.run_dir.prune(self.cfg.run.keep_checkpoints)
        barrier(self.world)
        return path

    def _check_finite(self, value: float) -> None:
        if not math.isfinite(value):
            good = newest_verified(self.run_dir) if self.world.is_main else None
            kept = f"last good checkpoint: {good}" if good else "no verified checkpoint"
            raise DivergedError(f"training loss became {value} at step {self.step}; stopped ({kept})")

    def evaluate(self, lr: float) -> None:
        """Log an eval record; when val improves, ``best`` becomes a copy of the newest checkpoint."""
        if not self.data.has_val:
            return
        cfg, world = self.cfg, self.world
        if self.eval_loaders is None:
            self.eval_loaders = [eval_windows(split, cfg, self.device, world.rank, world.size)
                                 for split in (self.data.val, self.data.train)]
        val_loss, tr_loss = (all_reduce_mean(estimate_loss(self.model, loader, cfg, self.ctx), world).item()
                             for loader in self.eval_loaders)
        self._check_finite(val_loss)
        self.metrics.write({"type": "eval", "iter": self.step, "train_loss": tr_loss, "val_loss": val_loss,
                            "lr": lr, "prism_lambda": _lambda(self.model)})
        if self.step > 0 and (self.best_val is None or val_loss < self.best_val):
            self.best_val = val_loss
            newest = self.run_dir.newest() if world.is_main else None
            if newest:
                self.run_dir.replace_best(newest)


def _final_eval_missing(run: RunDir, step: int, cfg: TrainConfig, has_val: bool) -> bool:
    """A finished run killed between its final save and its final evaluation still owes that record."""
    if not has_val or step % cfg.run.eval_interval or not run.metrics_path.is_file():
        return False
    return not any(r.get("type") == "eval" and r["iter"] == step for r in run.read_metrics())


def _catch_up_best(run: RunDir, step: int) -> None:
    """A run stopped after its final evaluation but before ``best`` became a copy of the final step (a
    kill, a full disk) owes that copy; every earlier step's is redone by the evaluation a resume reruns."""
    evals = [r for r in run.read_metrics() if r.get("type") == "eval" and r["iter"] > 0] \
        if run.metrics_path.is_file() else []
    if not evals or min(evals, key=lambda r: r["val_loss"])["iter"] != step or not run.step_dir(step).is_dir():
        return
    best_step = read_model_config(run.best)[1].get("step") if (run.best / "config.json").is_file() else None
    if best_step != step:
        warn(f"checkpoints/best was behind the final step's evaluation; copying step {step} to it")
        run.replace_best(run.step_dir(step))


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
