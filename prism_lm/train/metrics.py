"""Metrics: metrics.jsonl (the official repo's field names), TensorBoard if installed, FLOPs and MFU."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from prism_lm.config import ModelConfig
from prism_lm.errors import PrismError, warn
from prism_lm.model.attention import ATTENTION_KINDS
from prism_lm.run_dir import RunDir

# dense bf16 tensor-core peaks, FLOP/s
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def flops_per_token(cfg: ModelConfig, n_params: int, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward): 6N for the weights plus the attention matmuls.

    Per layer the forward spends 2·T·(Wqk + Wv) per token on QK^T and AV (no causal discount, as
    in nanoGPT and PaLM), tripled for the backward pass.
    """
    wqk, wv = ATTENTION_KINDS[cfg.attention].flop_widths(cfg)
    return 6.0 * n_params + 6.0 * cfg.n_layer * seq_len * (wqk + wv)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


class MetricsWriter:
    """Appends JSON records; mirrors scalars to TensorBoard when it is installed and enabled."""

    def __init__(self, run: RunDir, tensorboard: bool, enabled: bool = True):
        self.path = run.metrics_path
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run.tensorboard_dir))
            except ImportError:
                self.tb = None

    def truncate_after(self, step: int) -> None:
        """On resume from ``step``: keep what an uninterrupted run had written before that step's
        evaluation (iter records up to ``step``, eval records before it), since the loop runs the
        evaluation at ``step`` again; from step 0 (no checkpoint), nothing is kept."""
        if not (self.enabled and self.path.is_file()):
            return
        kept = [r for r in read_metrics(self.path)
                if (r["iter"] <= step if r.get("type") == "iter" else r["iter"] < step)]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        tmp.replace(self.path)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key not in ("type", "iter") and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{record['type']}/{key}", value, record["iter"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl; a partial last line (a kill mid-write) is dropped with a warning."""
    path = Path(path)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise PrismError(f"{path}: line {number} is not valid JSON") from None
            warn(f"{path}: dropped its partial last line (the run was interrupted while writing it)")
    return records
