"""``prism demo``: the whole pipeline on a laptop CPU, offline, in a few minutes.

Prepares the embedded corpus (compact vocabulary), trains a small PRISM and a GPT with the same
parameter count, evaluates both over the whole validation split, samples a story from each,
analyses both, and writes ``report.md`` (plus the analysis reports) into the output directory.
The numbers printed at the end are the unigram entropy of the training tokens (what a model that
ignores context can reach) and each model's validation loss.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from prism_lm.config import load_train_config
from prism_lm.data.prepare import prepare
from prism_lm.data.shards import ShardSet, unigram_entropy
from prism_lm.errors import PrismError

DEMO_STORIES = 6000
DEMO_PROMPT = "Once upon a time"


@dataclass
class DemoResult:
    name: str
    params: int
    steps: int
    seconds: float
    val: list[dict]
    sample: str
    run_dir: Path


def default_out_dir() -> Path:
    return Path("demo-runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def run_demo(out: Path | None = None, stories: int = DEMO_STORIES, max_iters: int | None = None,
             analyze: bool = True, log=print) -> dict:
    from prism_lm.run_dir import RunDir

    out = Path(out) if out is not None else default_out_dir()
    if out.exists() and not out.is_dir():
        raise PrismError(f"--out {out} exists and is a file; pass a new folder")
    if out.exists() and any(out.iterdir()):
        raise PrismError(f"refusing to write into non-empty {out}; pass a new --out")
    t_start = time.perf_counter()
    log(f"[demo] preparing {stories} embedded stories in {out / 'data'}")
    prepare([f"embedded:{stories}"], out / "data", val_fraction=0.05, compact_vocab=True, progress=False)
    train_data, val_data = ShardSet(out / "data", "train"), ShardSet(out / "data", "val")
    entropy = unigram_entropy(train_data)
    log(f"[demo] {len(train_data):,} train / {len(val_data):,} val tokens, vocabulary {train_data.vocab_size}, "
        f"unigram entropy {entropy:.3f} nats/token")

    results = [_train_one(name, out, val_data, max_iters, log) for name in ("prism", "gpt")]

    reports = {}
    if analyze:
        from prism_lm.analysis.report import analyze_run

        for r in results:
            log(f"[demo] analysing {r.name}")
            reports[r.name] = analyze_run(r.run_dir, out / "data", RunDir(r.run_dir).report_dir, max_windows=48)
    report = out / "report.md"
    report.write_text(_report(results, entropy, len(train_data), reports, time.perf_counter() - t_start, out),
                      encoding="utf-8")
    log(f"[demo] unigram entropy of the corpus: {entropy:.3f} nats/token")
    for r in results:
        log(f"[demo] {r.name:5s} val loss {r.val[-1]['loss']:.3f} nats/token "
            f"(perplexity {r.val[-1]['perplexity']:.2f}) after {r.steps} steps")
    log(f"[demo] report: {report}  ({time.perf_counter() - t_start:.0f}s in all)")
    return {"out": str(out), "unigram_entropy": entropy,
            "val_loss": {r.name: r.val[-1]["loss"] for r in results}, "report": str(report)}


def _train_one(name: str, out: Path, val_data: ShardSet, max_iters: int | None, log) -> DemoResult:
    """Train the tiny ``name`` config on the demo's data, score it on the whole val split at two
    contexts and sample a story from its final checkpoint."""
    from prism_lm.checkpoint import load_codec, load_model
    from prism_lm.evaluate import evaluate_split
    from prism_lm.model import generate
    from prism_lm.run_dir import RunDir
    from prism_lm.train.loop import train

    sets = [f'data.dir="{out / "data"}"', f'run.out_dir="{out / name}"', "run.progress=false"]
    if max_iters is not None:
        sets += [f"run.max_iters={max_iters}", f"run.eval_interval={max_iters}", f"run.checkpoint_interval={max_iters}"]
    cfg = load_train_config(f"tiny-{name}-cpu", sets)
    log(f"[demo] training {name.upper()} ({cfg.model.n_layer} layers, C={cfg.model.n_embd}, "
        f"T={cfg.model.block_size}) for {cfg.run.max_iters} steps")
    t0 = time.perf_counter()
    summary = train(cfg)
    seconds = time.perf_counter() - t0
    final = RunDir(out / name).step_dir(summary["step"])
    model, codec = load_model(final), load_codec(final)
    val = [evaluate_split(model, val_data, c, batch_size=16) for c in (64, cfg.model.block_size)]
    gen = torch.Generator().manual_seed(0)
    ids = generate(model, torch.tensor([codec.encode(DEMO_PROMPT)]), 160, temperature=0.8, top_k=40,
                   stop_token=codec.eot, generator=gen)[0].tolist()
    story = codec.decode(ids).split("<|endoftext|>")[0]
    log(f"[demo] {name.upper()}: {seconds:.0f}s, val loss {val[-1]['loss']:.3f} (context {val[-1]['context']})")
    return DemoResult(name.upper(), model.num_params(), summary["step"], seconds, val, story, out / name)


SUMMARY_METRICS = ("median_lag", "mass_beyond_far", "antecedent_hit_rate", "antecedent_lag_null")
SUMMARY_COLUMNS = (*SUMMARY_METRICS, "diversity", "diversity at step 0")


def stream_summary(report: dict) -> list[tuple[str, int, list[float | None]]]:
    """(stream, number of heads, the mean of each SUMMARY_METRICS over those heads, then the stream's
    head diversity trained and at step 0) from an analysis report."""
    heads = report["heads"]["heads"]
    diversity = report["heads"]["diversity"]["mean"]
    initial = report.get("heads_init", {}).get("diversity", {}).get("mean", {})
    rows = []
    for stream in dict.fromkeys(e["stream"] for e in heads):
        mine = [e for e in heads if e["stream"] == stream]
        rows.append((stream, len(mine), [float(np.mean([e[k] for e in mine])) if k in mine[0] else None
                                         for k in SUMMARY_METRICS] + [diversity.get(stream), initial.get(stream)]))
    return rows


def _report(results: list[DemoResult], entropy: float, train_tokens: int, reports: dict, seconds: float,
            folder: Path) -> str:
    """report.md, its links relative to ``folder`` (where it is written), so they work in any Markdown viewer."""
    lines = ["# prism-lm demo", "",
             f"Embedded corpus: {train_tokens:,} training tokens; unigram entropy {entropy:.3f} nats/token "
             "(the loss of a model that ignores context). Whole validation split, non-overlapping windows.", "",
             "| model | parameters | steps | wall time here | " + " | ".join(
                 f"val loss @ {v['context']}" for v in results[0].val) + " | perplexity |",
             "|---|---:|---:|---:|" + "---:|" * len(results[0].val) + "---:|"]
    for r in results:
        losses = " | ".join(f"{v['loss']:.3f}" for v in r.val)
        lines.append(f"| {r.name} | {r.params:,} | {r.steps} | {r.seconds:.0f} s | {losses} | "
                     f"{math.exp(r.val[-1]['loss']):.2f} |")
    lines += ["", "## Samples", ""]
    for r in results:
        lines += [f"**{r.name}** (prompt \"{DEMO_PROMPT}\", temperature 0.8, top-k 40):", "", f"> {r.sample}", ""]
    if reports:
        lines += ["## Analysis", "", "Means over heads of each stream (validation windows; full tables, figures and "
                  "bootstrap intervals in each model's report):", "",
                  "| model | stream | heads | " + " | ".join(SUMMARY_COLUMNS) + " |",
                  "|---|---|---:|" + "---:|" * len(SUMMARY_COLUMNS)]
        analyses = {name: json.loads(paths["json"].read_text(encoding="utf-8")) for name, paths in reports.items()}
        for name, analysis in analyses.items():
            for stream, n, means in stream_summary(analysis):
                lines.append(f"| {name} | {stream} | {n} | " + " | ".join(
                    "–" if v is None else f"{v:.3f}" for v in means) + " |")
        uniform = next(iter(analyses.values()))["heads"].get("uniform_hit_rate")  # the same data for every model
        if uniform is not None:
            lines += ["", f"A head that spread its mass evenly over the past would have an antecedent hit rate of "
                      f"{uniform:.3f}."]
        lines.append("")
        for name, paths in reports.items():
            links = {kind: Path(os.path.relpath(path, folder)).as_posix() for kind, path in paths.items()}
            lines.append(f"- {name}: [{links['md']}]({links['md']}), [{links['html']}]({links['html']}), "
                         f"[{links['json']}]({links['json']})")
        lines.append("")
    lines += [f"Total wall time {seconds:.0f} s. The wall times measure this machine and whatever else it was doing: "
              "they compare nothing (speed is measured by paired rounds, benchmarks/RESULTS.md)."]
    return "\n".join(lines) + "\n"
