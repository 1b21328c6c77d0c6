"""One run of a sweep, in its own directory: train (or resume), evaluate, write ``result.json``.

The same function runs under every executor: a local worker process
(``python -m prism_lm.experiments.job RUN_DIR THREADS``) or a submitit job (Slurm, or submitit's
local executor). A run directory holds ``job.json`` (what to run, written by the sweep),
``train/`` (the training run directory), ``log.txt`` (local workers) and, once finished,
``result.json``. Exit status: 0 finished (or diverged, which is a result), 3 interrupted by a
signal (a checkpoint was saved; running again continues exactly), 1 failed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from prism_lm.config import TrainConfig, from_dict
from prism_lm.errors import DivergedError, PrismError
from prism_lm.files import read_tagged_json, replace_json

JOB_FORMAT = "prism-lm sweep job v1"
RESULT_FORMAT = "prism-lm sweep result v1"
INTERRUPTED = 3
HEAD_METRICS = ("median_lag", "mean_distance", "mass_beyond_far", "entropy", "antecedent_hit_rate",
                "antecedent_lag_null")


def read_job(run_dir: Path) -> dict:
    return read_tagged_json(run_dir / "job.json", JOB_FORMAT, "a sweep job description")


def read_result(run_dir: Path) -> dict | None:
    path = run_dir / "result.json"
    return read_tagged_json(path, RESULT_FORMAT, "a sweep result") if path.is_file() else None


def run_job(run_dir: str | Path, threads: int = 0) -> str:
    """Run the job of ``run_dir``; returns "done", "diverged" or "interrupted"."""
    import torch

    from prism_lm.train.loop import train

    run_dir = Path(run_dir)
    if threads > 0:
        torch.set_num_threads(threads)
    job = read_job(run_dir)
    cfg = from_dict(TrainConfig, job["config"])
    cfg.validate()
    started = time.time()
    diverged = None
    try:
        summary = train(cfg, resume="auto")
        if summary.get("interrupted_by"):
            return "interrupted"
    except DivergedError as exc:
        diverged = str(exc)
    row = {**job["labels"], "identity": job["identity"], "run_dir": run_dir.name, "diverged": diverged is not None}
    row.update(_training_columns(cfg))
    heads: dict = {}
    if diverged is None:
        columns, heads = _evaluation_columns(cfg, job["evaluate"], run_dir)
        row.update(columns)
    result = {"row": row, "evaluate": job["evaluate"], "diverged": diverged, "heads": heads,
              "job_seconds": time.time() - started}
    replace_json(run_dir / "result.json", result, RESULT_FORMAT)
    return "diverged" if diverged else "done"


def _training_columns(cfg: TrainConfig) -> dict:
    from prism_lm.run_dir import RunDir
    from prism_lm.train.metrics import read_metrics

    run = RunDir(cfg.run.out_dir)
    records = read_metrics(run.metrics_path) if run.metrics_path.exists() else []
    iters = [r for r in records if r["type"] == "iter"]
    evals = [r for r in records if r["type"] == "eval" and math.isfinite(r["val_loss"])]
    norms = np.array([r["grad_norm"] for r in iters], float)
    steps = max((r["iter"] for r in iters), default=0)
    tokens_per_step = cfg.run.batch_size * cfg.run.grad_accum * cfg.model.block_size
    seconds, last = 0.0, 0
    for r in iters:  # each record's throughput covers the steps since the previous record
        seconds += tokens_per_step * (r["iter"] - last) / max(r["tokens_per_s"], 1e-9)
        last = r["iter"]
    return {
        "steps": steps, "tokens_seen": steps * tokens_per_step, "train_seconds": seconds,
        "train_loss_final": iters[-1]["train_loss"] if iters else None,
        "val_estimate_best": min((r["val_loss"] for r in evals if r["iter"] > 0), default=None),
        "val_estimate_final": evals[-1]["val_loss"] if evals else None,
        "grad_norm_max": float(norms.max()) if len(norms) else None,
        "grad_norm_mean": float(norms.mean()) if len(norms) else None,
        "clipped_fraction": float((norms > cfg.optim.grad_clip).mean()) if len(norms) and cfg.optim.grad_clip
        else (0.0 if len(norms) else None),
        "logged_steps": len(norms),
    }


def _evaluation_columns(cfg: TrainConfig, spec: dict, run_dir: Path) -> tuple[dict, dict]:
    """The row's evaluation columns, and the per-head entries (trained and untrained) that the report
    bootstraps over; the full head statistics go to heads.json and heads_init.json."""
    from prism_lm.analysis.heads import head_statistics
    from prism_lm.checkpoint import load_model
    from prism_lm.data.shards import ShardSet
    from prism_lm.evaluate import evaluate_split
    from prism_lm.run_dir import RunDir
    from prism_lm.train.loop import initial_model

    run = RunDir(cfg.run.out_dir)
    final_dir, best_dir = run.newest(), run.model_checkpoint()
    val = ShardSet(cfg.data.dir, "val")
    final = load_model(final_dir)
    best = load_model(best_dir) if best_dir is not None and _step(best_dir) != _step(final_dir) else final
    cols: dict = {"parameters": final.num_params()}
    for ctx in spec["contexts"] or [cfg.model.block_size]:
        cols[f"val_loss_{ctx}"] = evaluate_split(final, val, ctx, batch_size=16)["loss"]
        cols[f"best_val_loss_{ctx}"] = (cols[f"val_loss_{ctx}"] if best is final
                                        else evaluate_split(best, val, ctx, batch_size=16)["loss"])
    heads = {}
    if spec["head_windows"]:
        models = {"heads": ("", final)}
        if spec["initial"]:
            cfg.model.vocab_size = final.config.vocab_size
            models["heads_init"] = ("init_", initial_model(cfg).eval())
        for name, (prefix, model) in models.items():
            stats = head_statistics(model, val, max_windows=spec["head_windows"])
            cols.update(_head_columns(stats, prefix))
            (run_dir / f"{name}.json").write_text(json.dumps(stats) + "\n", encoding="utf-8")
            heads[name] = [{k: e[k] for k in ("layer", "stream", *HEAD_METRICS) if k in e} for e in stats["heads"]]
    return cols, heads


def _step(checkpoint: Path) -> int | None:
    from prism_lm.checkpoint.model import read_model_config

    return read_model_config(checkpoint)[1].get("step")


def _head_columns(stats: dict, prefix: str) -> dict:
    """Per stream: the mean over heads of each head metric and the diversity; the first-minus-second
    stream difference; recall losses by kind."""
    cols = {}
    streams = stats["streams"]
    for stream in streams:
        mine = [e for e in stats["heads"] if e["stream"] == stream]
        for metric in HEAD_METRICS:
            if metric in mine[0]:
                cols[f"{prefix}{stream}_{metric}"] = float(np.mean([e[metric] for e in mine]))
        cols[f"{prefix}{stream}_diversity"] = stats["diversity"]["mean"][stream]
    for metric, comparison in stats["comparison"].items():
        if isinstance(comparison, dict):
            cols[f"{prefix}stream_diff_{metric}"] = comparison["diff"]
    recall = stats.get("recall_loss")
    if recall:
        cols[f"{prefix}recall_loss"] = recall["recall_mean"]
        cols[f"{prefix}other_loss"] = recall["other_mean"]
        for kind, entry in recall["by_kind"].items():
            cols[f"{prefix}recall_loss_{kind}"] = entry["loss"]
    return cols


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2):
        print("usage: python -m prism_lm.experiments.job RUN_DIR [THREADS]", file=sys.stderr)
        return 2
    try:
        status = run_job(argv[0], int(argv[1]) if len(argv) > 1 else 0)
    except PrismError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"[job] {status}", flush=True)
    return INTERRUPTED if status == "interrupted" else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
