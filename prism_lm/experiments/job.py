"""One run of a sweep, in its own folder: train (or resume), evaluate, write ``result.json``.

The same function runs under every executor: a local worker process
(``python -m prism_lm.experiments.job RUN_DIR THREADS``) or a submitit job (Slurm, or submitit's
local executor). The folder's layout is ``sweep_dir.SweepRun``'s. Exit status: 0 finished (or
diverged, which is a result), 3 interrupted by a signal (a checkpoint was saved; running again
continues exactly), 1 failed.

What runs after training is an ``EvaluateSpec``, typed from the experiment file to the job and back
(the result records it, so a changed spec re-evaluates without retraining). Evaluation and head
statistics run on the run's own device (``run.device``), as its training did.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prism_lm.analysis.measures import HEAD_COLUMNS, PATTERN_MEASURES, STREAM_DIFF_COLUMNS
from prism_lm.config import TrainConfig, from_dict, to_dict
from prism_lm.errors import DivergedError, PrismError
from prism_lm.experiments.stability import STABILITY_COLUMNS, stability_columns
from prism_lm.experiments.sweep_dir import SweepRun

INTERRUPTED = 3
PARENT_ENV = "PRISM_SWEEP_PID"  # set by a local sweep: the job dies with that process
# per head and stream: averaged over a stream's heads into ``{stream}_{metric}`` columns, and first-minus-second
# stream differences into ``stream_diff_{metric}``: the measures of the one registry (analysis/measures.py)
HEAD_METRICS = HEAD_COLUMNS
STREAM_DIFF_METRICS = STREAM_DIFF_COLUMNS
SINK_MEASURES = tuple(m for m in PATTERN_MEASURES if m.startswith("sink_"))  # heads.sink_masses' measures
SINK_WINDOWS = ("doc_start", "mid_doc", "bos")  # where the sink columns' windows start (heads.sink_by_window_start)
TRAINING_COLUMNS = ("steps", "tokens_seen", "train_seconds", "train_loss_final", "val_estimate_best",
                    "val_estimate_final", "grad_norm_max", "grad_norm_mean", "clipped_fraction", "logged_steps",
                    "diverged", "failed", "unigram_entropy", "context_gain", "parameters", "lambda_final",
                    *STABILITY_COLUMNS)


ANNOTATED_PARTS = ("recall_loss", "other_loss", "recall_accuracy", "recall_excess", "antecedent", "selectivity",
                   "_off_", "_role_")


def needs_annotations(column: str) -> bool:
    """Columns only a corpus with dependency annotations can fill (recall, antecedents, silenced streams)."""
    return any(part in column for part in ANNOTATED_PARTS)


@dataclass
class EvaluateSpec:
    """What runs after a run's training; each result lands in the run's row of the table."""

    contexts: list[int] = field(default_factory=list)  # whole-val-split loss at each context ([]: block size)
    head_windows: int = 32  # windows of head statistics (0: none)
    initial: bool = True  # the same head statistics for the run's untrained model (its step 0)
    head_ablations: bool = False  # each head zeroed alone: {stream}_head_ablation_mean and _spread columns
    long_contexts: list[int] = field(default_factory=list)  # multiples of block_size (position_embedding none)

    def validate(self) -> None:
        if any(c < 1 for c in self.contexts):
            raise PrismError(f"evaluate.contexts must be >= 1, got {self.contexts}")
        if self.head_windows < 0:
            raise PrismError(f"evaluate.head_windows must be >= 0, got {self.head_windows}")
        if any(k < 1 or k > 64 for k in self.long_contexts):
            raise PrismError(f"evaluate.long_contexts are multiples of block_size in 1..64, got {self.long_contexts}")
        if self.head_ablations and not self.head_windows:
            raise PrismError("evaluate.head_ablations needs evaluate.head_windows > 0 (the windows it measures on)")

    def union(self, other: EvaluateSpec) -> EvaluateSpec:
        """What a run shared by two experiments evaluates: contexts united, the most head windows,
        the untrained model if either asks."""
        return EvaluateSpec(sorted(set(self.contexts) | set(other.contexts)),
                            max(self.head_windows, other.head_windows), self.initial or other.initial,
                            self.head_ablations or other.head_ablations,
                            sorted(set(self.long_contexts) | set(other.long_contexts)))

    def covers(self, other: EvaluateSpec) -> bool:
        """Whether a result evaluated with this spec holds everything ``other`` asks for, computed the
        same way: every context and long context of it, the same head windows when it asks for head
        statistics (more would change them), the untrained model and head ablations if it asks for them."""
        return (set(self.contexts) >= set(other.contexts) and other.head_windows in (0, self.head_windows)
                and (self.initial or not other.initial) and (self.head_ablations or not other.head_ablations)
                and set(self.long_contexts) >= set(other.long_contexts))

    def columns(self, cfg: TrainConfig) -> set[str]:
        """Every column a run of ``cfg`` can have in its row (annotation-dependent ones included), so
        an experiment file's verdicts are checked against them before anything trains."""
        from prism_lm.analysis.heads import DISTANCE_BUCKETS
        from prism_lm.data.synthetic import ANNOTATION_KINDS
        from prism_lm.model.attention import ATTENTION_KINDS

        cols = set(TRAINING_COLUMNS)
        for ctx in self.contexts or [cfg.model.block_size]:
            cols |= {f"val_loss_{ctx}", f"best_val_loss_{ctx}"}
            if cfg.data.loss_on == "answers":
                cols.add(f"answer_loss_{ctx}")
        if cfg.model.mlp == "ista":
            prefixes = ("", "init_") if self.initial and self.head_windows else ("",)
            cols |= {f"{p}ista_zero_fraction{layer}" for p in prefixes
                     for layer in ("", *(f"_l{i}" for i in range(cfg.model.n_layer)))}
        if cfg.model.position_embedding == "none":  # only these run past block_size
            for k in self.long_contexts:
                cols |= {f"long_{k}x_{m}" for m in ("excess", "sink_first", "sink_first4")}
                cols |= {f"long_{k}x_bucket{j}" for j in range(k)}
        if not self.head_windows:
            return cols
        streams = ATTENTION_KINDS[cfg.model.attention].streams(cfg.model)
        cols |= {f"{s}_{m}_{where}" for s in (*streams, "all") for m in SINK_MEASURES
                 for where in SINK_WINDOWS}
        for prefix in ("", "init_") if self.initial else ("",):
            cols |= {f"{prefix}{s}_{m}" for s in streams for m in (*HEAD_METRICS, "diversity")}
            cols |= {f"{prefix}all_{m}" for m in HEAD_METRICS}
            if len(streams) > 1:
                cols |= {f"{prefix}stream_diff_{m}" for m in STREAM_DIFF_METRICS}
                cols |= {f"{prefix}cross_kernel"}
            cols |= {f"{prefix}{c}" for c in ("recall_loss", "other_loss", "recall_accuracy", "recall_excess")}
            cols |= {f"{prefix}{s}_role_{m}" for s in streams for m in ("diversity", "strength")}  # 2+ kinds
            cols |= {f"{prefix}recall_{m}_{k}" for k in ANNOTATION_KINDS for m in ("loss", "accuracy")}
        if len(streams) > 1:  # the trained model with each stream silenced (annotated corpora)
            cols |= {f"{s}_off_{which}_delta" for s in streams for which in ("recall", "other")}
            cols |= {f"{s}_off_recall_accuracy" for s in streams}
            cols |= {f"{s}_off_recall_delta_{_span_tag(lo, hi)}" for s in streams for lo, hi in DISTANCE_BUCKETS}
        if self.head_ablations:
            cols |= {f"{s}_head_ablation_{which}" for s in streams for which in ("mean", "spread")}
        return cols


def run_job(run_dir: str | Path, threads: int = 0) -> str:
    """Run the job of ``run_dir``; returns "done", "diverged" or "interrupted"."""
    import torch

    run = SweepRun(run_dir)
    if threads > 0:
        torch.set_num_threads(threads)
    with run.lock():  # training through evaluation: a rerun's job waits for this one, never runs beside it
        return _run_locked(run)


def _run_locked(run: SweepRun) -> str:
    from prism_lm.train.loop import train

    job = run.read_job()
    cfg = from_dict(TrainConfig, job["config"])
    cfg.validate()
    spec = from_dict(EvaluateSpec, job["evaluate"], "evaluate")
    started = time.time()
    diverged = None
    try:
        summary = train(cfg, resume="auto")
        if summary.get("interrupted_by"):
            return "interrupted"
    except DivergedError as exc:
        diverged = str(exc)
    row = {**job["labels"], "identity": job["identity"], "run_dir": run.name, "diverged": diverged is not None}
    row.update(_training_columns(cfg))
    heads: dict = {}
    if diverged is None:
        columns, heads = _evaluation_columns(cfg, spec, run)
        row.update(columns)
    row.update(_failure_columns(cfg, spec, row))
    run.write_result({"row": row, "evaluate": to_dict(spec), "diverged": diverged, "heads": heads,
                      "job_seconds": time.time() - started})
    return "diverged" if diverged else "done"


def _training_columns(cfg: TrainConfig) -> dict:
    from prism_lm.run_dir import RunDir

    run = RunDir(cfg.run.out_dir)
    records = run.read_metrics() if run.metrics_path.exists() else []
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
        # PRISM's λ at the last logged step: where the schedule ended, or where a learned λ went
        "lambda_final": next((r["prism_lambda"] for r in reversed(iters) if r.get("prism_lambda") is not None), None),
        **stability_columns([r["iter"] for r in iters], [r["train_loss"] for r in iters], list(norms),
                            cfg.optim.warmup_iters),
    }


FAILURE_MARGIN = 0.1  # nats: a run ending within this of the unigram entropy learned nothing from context
FAILURE_RULE = (f"failed: diverged, or a final whole-split val loss above the unigram entropy of the training "
                f"tokens minus {FAILURE_MARGIN:g} nat (within {FAILURE_MARGIN:g} of what a model that ignores "
                "context scores)")


def is_failure(diverged: bool, loss: float | None, entropy: float | None) -> bool:
    """The one failure rule (``FAILURE_RULE``): at the tiny scale a too-large learning rate ends at
    the unigram entropy rather than in a non-finite loss, a hair below it as often as above."""
    return bool(diverged or loss is None or entropy is None or loss > entropy - FAILURE_MARGIN)


def _failure_columns(cfg: TrainConfig, spec: EvaluateSpec, row: dict) -> dict:
    """``failed`` by ``is_failure``, with the unigram entropy it compares against, and ``context_gain``:
    how far the final val loss lies below that entropy (what context buys beyond token frequencies;
    C1's gate, that both arms left warm-up)."""
    from prism_lm.data.shards import training_splits, unigram_entropy

    entropy = unigram_entropy(training_splits(cfg.data.dir, cfg.data.holdout)[0])
    loss = row.get(f"val_loss_{(spec.contexts or [cfg.model.block_size])[-1]}")
    return {"unigram_entropy": entropy, "failed": is_failure(row["diverged"], loss, entropy),
            "context_gain": None if loss is None else entropy - loss}


def _evaluation_columns(cfg: TrainConfig, spec: EvaluateSpec, sweep_run: SweepRun) -> tuple[dict, dict]:
    """The row's evaluation columns, and the per-head entries (trained and untrained) that the report
    bootstraps over; the full head statistics go to heads.json and heads_init.json. Everything runs
    on the run's own device."""
    from prism_lm.analysis.heads import head_statistics
    from prism_lm.checkpoint import load_model, read_model_config
    from prism_lm.checkpoint.model import check_same_tokenizer, initial_model
    from prism_lm.data.shards import training_splits
    from prism_lm.devices import resolve_device
    from prism_lm.evaluate import evaluate_split
    from prism_lm.run_dir import RunDir

    device = resolve_device(cfg.run.device)
    run = RunDir(cfg.run.out_dir)
    final_dir, best_dir = run.newest(), run.model_checkpoint()
    val = training_splits(cfg.data.dir, cfg.data.holdout)[1]  # val, or the held-out part of train (tuning)
    check_same_tokenizer(final_dir, cfg.data.dir)  # a folder moved or swapped under the sweep
    final = load_model(final_dir, device=device)
    same = best_dir is None or read_model_config(best_dir)[1].get("step") == read_model_config(final_dir)[1].get("step")
    best = final if same else load_model(best_dir, device=device)
    cols: dict = {"parameters": final.num_params()}
    bos = cfg.data.sampler == "bos"  # scored on the windows it trained on: each opening on a document's separator
    answers = cfg.data.loss_on == "answers"  # the loss the run trained on, its answers only, goes beside
    for ctx in spec.contexts or [cfg.model.block_size]:
        scored = evaluate_split(final, val, ctx, batch_size=16, device=device, bos=bos, answers=answers)
        cols[f"val_loss_{ctx}"] = scored["every_token_loss" if answers else "loss"]
        cols[f"best_val_loss_{ctx}"] = (cols[f"val_loss_{ctx}"] if best is final
                                        else evaluate_split(best, val, ctx, batch_size=16, device=device,
                                                            bos=bos)["loss"])
        if answers:
            cols[f"answer_loss_{ctx}"] = scored["loss"]
    heads = {}
    cols.update(_sparsity_columns(final, val, spec.head_windows or 16, ""))
    if spec.head_windows:
        models = {"heads": ("", final)}
        if spec.initial:
            cfg.model.vocab_size = final.config.vocab_size
            models["heads_init"] = ("init_", initial_model(cfg).to(device).eval())
            cols.update(_sparsity_columns(models["heads_init"][1], val, spec.head_windows, "init_"))
        for name, (prefix, model) in models.items():
            stats = head_statistics(model, val, max_windows=spec.head_windows, bos=bos)
            cols.update(_head_columns(stats, prefix))
            sweep_run.write_heads(name, stats)
            heads[name] = [{k: e[k] for k in ("layer", "stream", *HEAD_METRICS) if k in e} for e in stats["heads"]]
        cols.update(_intervention_columns(final, val, spec.head_windows, bos=bos))
        cols.update(_sink_columns(final, val, min(16, spec.head_windows)))
        if spec.head_ablations:
            from prism_lm.analysis.ablation import head_ablation_spread

            for stream, entry in head_ablation_spread(final, val, min(16, spec.head_windows)).items():
                cols.update({f"{stream}_head_ablation_{k}": v for k, v in entry.items()})
    if cfg.model.position_embedding == "none":
        from prism_lm.analysis.long_context import position_losses

        for k in spec.long_contexts:
            out = position_losses(final, val, k)
            cols.update({f"long_{k}x_{m}": out[m] for m in ("excess", "sink_first", "sink_first4")})
            cols.update({f"long_{k}x_bucket{j}": v for j, v in enumerate(out["bucket_loss"])})
    return cols, heads


def _sparsity_columns(model, shards, windows: int, prefix: str) -> dict:
    """``{prefix}ista_zero_fraction`` (mean over ISTA layers) and per layer ``..._l{i}``; none without ISTA."""
    from prism_lm.analysis.sparsity import ista_sparsity

    out = ista_sparsity(model, shards, windows)
    if out is None:
        return {}
    cols = {f"{prefix}ista_zero_fraction": out["mean"]}
    cols.update({f"{prefix}ista_zero_fraction_l{i}": v for i, v in zip(out["layers"], out["per_layer"], strict=True)})
    return cols


def _sink_columns(model, shards, windows: int) -> dict:
    """Sink mass on windows starting at a document start, mid-document and at the <|endoftext|> before a
    document (a BOS), per stream and over all heads."""
    from prism_lm.analysis.heads import sink_by_window_start

    out = sink_by_window_start(model, shards, windows)
    cols = {}
    for where in SINK_WINDOWS:
        per_stream = out[where]
        for stream, values in per_stream.items():
            cols.update({f"{stream}_{k}_{where}": v for k, v in values.items()})
        for k in SINK_MEASURES:
            if per_stream:
                cols[f"all_{k}_{where}"] = float(np.mean([v[k] for v in per_stream.values()]))
    return cols


def _intervention_columns(model, shards, windows: int, bos: bool = False) -> dict:
    """Per stream of a two-stream kind: the loss change on recall and on other tokens with it silenced."""
    from prism_lm.analysis.ablation import intervention_effects
    from prism_lm.analysis.heads import DISTANCE_BUCKETS, distance_bucket

    streams = model.blocks[0].attn.stream_names
    if len(streams) < 2 or not len(shards.annotations()):
        return {}
    out = intervention_effects(model, shards, {s: {"zero_streams": [s]} for s in streams}, max_windows=windows,
                               bos=bos)
    cols = {f"{s}_off_{which}_delta": out["effects"][s][f"{which}_delta"]
            for s in streams for which in ("recall", "other")}
    cols.update({f"{s}_off_recall_accuracy": out["effects"][s]["recall_accuracy"] for s in streams})
    for s in streams:
        for lo, hi in DISTANCE_BUCKETS:
            by_distance = out["effects"][s]["by_distance"]
            cols[f"{s}_off_recall_delta_{_span_tag(lo, hi)}"] = by_distance.get(distance_bucket(lo))
    return cols


def _span_tag(lo: int, hi: int | None) -> str:
    """A distance bucket as a column suffix: d1_16, d17_64, dgt64."""
    return f"d{lo}_{hi}" if hi else f"dgt{lo - 1}"


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
    if stats.get("logit_lag"):
        cols[f"{prefix}cross_kernel"] = stats["logit_lag"]["mean_abs"]
    for metric in HEAD_METRICS:  # every head of every stream: the columns that compare across kinds
        values = [e[metric] for e in stats["heads"] if metric in e]
        if values:
            cols[f"{prefix}all_{metric}"] = float(np.mean(values))
    roles = stats.get("roles") or {}  # present with annotations of two kinds or more
    for what in ("diversity", "strength"):
        cols.update({f"{prefix}{stream}_role_{what}": v for stream, v in roles.get(what, {}).items() if v is not None})
    for metric, comparison in stats["comparison"].items():
        if isinstance(comparison, dict):
            cols[f"{prefix}stream_diff_{metric}"] = comparison["diff"]
    recall = stats.get("recall_loss")
    if recall:
        cols[f"{prefix}recall_loss"] = recall["recall_mean"]
        cols[f"{prefix}other_loss"] = recall["other_mean"]
        cols[f"{prefix}recall_accuracy"] = recall["recall_accuracy"]
        cols[f"{prefix}recall_excess"] = recall["recall_mean"] - recall["other_mean"]  # recalls' cost beyond the rest
        for kind, entry in recall["by_kind"].items():
            cols[f"{prefix}recall_loss_{kind}"] = entry["loss"]
            cols[f"{prefix}recall_accuracy_{kind}"] = entry["accuracy"]
    return cols


def die_with_parent() -> None:
    """Ask the kernel for a SIGTERM when the sweep that started this job dies (Linux
    ``PR_SET_PDEATHSIG``; the SIGTERM makes training save and stop); if the sweep died before the
    request took effect, stop now. Elsewhere a sweep killed by SIGKILL leaves its jobs running to
    the end of their run."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
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
