"""Metrics: metrics.jsonl (the official repo's field names), TensorBoard if installed, FLOPs and MFU."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import torch

from prism_lm.config import ModelConfig
from prism_lm.errors import warn
from prism_lm.files import disk_errors
from prism_lm.model.attention import ATTENTION_KINDS
from prism_lm.model.mlp import MLP_KINDS
from prism_lm.run_dir import RunDir, read_metrics

# dense bf16 tensor-core peaks, FLOP/s
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), counted from the shapes of the matmuls.

    Forward, per token: 2·fan_in·fan_out for every weight matmul each attention and MLP kind
    declares (``matmuls``: a weight used twice, such as PRISM's U as W_O = Uᵀ, counts twice), the
    tied LM head (C × V), and per layer 2·T·(Wqk + Wv) for QK^T and AV (no causal discount, as in
    nanoGPT and PaLM). The backward pass costs twice the forward. Embedding lookups, norms, RoPE and
    softmax are not matmuls and are left out.
    """
    attention, mlp = ATTENTION_KINDS[cfg.attention], MLP_KINDS[cfg.mlp]
    layer = sum(2 * fan_in * fan_out for fan_in, fan_out in (*attention.matmuls(cfg), *mlp.matmuls(cfg)))
    wqk, wv = attention.map_widths(cfg)
    forward = cfg.n_layer * (layer + 2 * seq_len * (wqk + wv)) + 2 * cfg.n_embd * cfg.vocab_size
    return 3.0 * forward


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


class MetricsWriter:
    """Every record goes to metrics.jsonl, the console, and TensorBoard / W&B when asked for.

    Console: in a terminal, a progress bar whose postfix shows the last iter record, with a line per
    evaluation; otherwise (batch jobs, ``nohup``, ``| tee``) one plain line per record, flushed.
    W&B (``run.wandb``) keeps its run id in the run directory, so a resume continues the same W&B
    run; ``WANDB_MODE=offline`` works without a network.
    """

    def __init__(self, run: RunDir, tensorboard: bool, enabled: bool = True, wandb: bool = False,
                 progress: bool = True, max_iters: int = 0, step: int = 0, config: dict | None = None):
        self.path = run.metrics_path
        self.enabled, self.max_iters = enabled, max_iters
        self.tb = self.wandb = self.bar = None
        if not enabled:
            return
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run.tensorboard_dir))
                if step == 0:  # once per run: a resume appends to the same event files
                    write_tensorboard_config(self.tb, config or {})
            except ImportError:
                warn("run.tensorboard is true but TensorBoard is not installed (pip install 'prism-lm[tb]'); "
                     "not logging to it")
        if wandb:
            self.wandb = _wandb_run(run, config or {})
        if progress and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=max_iters, initial=step, unit="it", dynamic_ncols=True)

    def truncate_after(self, step: int) -> None:
        """On resume from ``step``: keep what an uninterrupted run had written before that step's
        evaluation (iter records up to ``step``, eval records before it), since the loop runs the
        evaluation at ``step`` again; from step 0 (no checkpoint), nothing is kept."""
        if not (self.enabled and self.path.is_file()):
            return
        kept = [r for r in read_metrics(self.path)
                if (r["iter"] <= step if r.get("type") == "iter" else r["iter"] < step)]
        tmp = self.path.with_suffix(".jsonl.tmp")
        with disk_errors("the metrics log", tmp, "the run's files are unchanged"):
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        tmp.replace(self.path)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with disk_errors("the metrics log", self.path, "the checkpoints are intact; --resume auto continues"), \
                open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {k: v for k, v in record.items() if k not in ("type", "iter") and isinstance(v, (int, float))}
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(f"{record['type']}/{key}", value, record["iter"])
        if self.wandb is not None:
            self.wandb.log({f"{record['type']}/{k}": v for k, v in scalars.items()}, step=record["iter"])
        line = console_line(record, self.max_iters)
        if self.bar is None:
            print(line, flush=True)
        elif record["type"] == "iter":
            self.bar.set_postfix_str(line.split(" | ", 1)[1])
        else:
            self.bar.write(line)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def write_tensorboard_config(writer, config: dict) -> None:
    """The resolved config as text (TOML) and its scalar keys as hyper-parameters (the HParams tab),
    with the losses as the metrics they are compared by."""
    from tensorboard.plugins.hparams import summary_v2 as hp  # TensorBoard's own: booleans stay booleans

    from prism_lm.config import TrainConfig, dump_toml, flatten, from_dict

    if not config:
        return
    writer.add_text("config", "```toml\n" + dump_toml(from_dict(TrainConfig, config)) + "```", 0)
    flat = {key: value for key, value in flatten(config).items() if isinstance(value, (bool, int, float, str))}
    metrics = [hp.Metric("eval/val_loss"), hp.Metric("iter/train_loss")]
    writer.file_writer.add_summary(hp.hparams_config_pb(hparams=[hp.HParam(key) for key in flat], metrics=metrics))
    writer.file_writer.add_summary(hp.hparams_pb(flat))


def console_line(record: dict, max_iters: int) -> str:
    """One plain line for a metrics record: step, losses, lr, λ, grad-norm, tokens/s."""
    parts = [f"{record['type']} {record['iter']}/{max_iters}"]
    names = {"train_loss": "loss {:.4f}", "val_loss": "val loss {:.4f}", "lr": "lr {:.2e}",
             "prism_lambda": "λ {:.4f}", "grad_norm": "grad-norm {:.3f}", "tokens_per_s": "{:,.0f} tok/s"}
    for key, fmt in names.items():
        if record.get(key) is not None:
            parts.append(fmt.format(record[key]))
    return " | ".join(parts)


def wandb_settings(run: RunDir, config: dict, environ=os.environ) -> dict:
    """``wandb.init``'s project, entity, group, tags and dir from the config's ``[wandb]`` section,
    each left to W&B (None) where its environment variable is set: W&B's conventions win, and
    arguments to ``wandb.init`` would override its variables."""
    section = config.get("wandb", {})
    chosen = {"project": ("WANDB_PROJECT", section.get("project") or "prism-lm"),
              "entity": ("WANDB_ENTITY", section.get("entity") or None),
              "group": ("WANDB_RUN_GROUP", section.get("group") or None),
              "tags": ("WANDB_TAGS", list(section.get("tags") or []) or None),
              "dir": ("WANDB_DIR", section.get("dir") or str(run.path))}
    return {key: None if environ.get(variable) else value for key, (variable, value) in chosen.items()}


def _wandb_run(run: RunDir, config: dict):
    try:
        import wandb
    except ImportError:
        warn("run.wandb is true but wandb is not installed (pip install wandb); not logging to it")
        return None
    run_id = run.wandb_id(uuid.uuid4().hex[:8])
    settings = wandb_settings(run, config)
    if settings["dir"]:
        Path(settings["dir"]).mkdir(parents=True, exist_ok=True)
    return wandb.init(name=run.path.name, id=run_id, resume="allow", config=config, **settings)
