"""Issue 15's GPU suite: prism-lm against the official PRISM and nanoGPT, in one process, on one device.

    python benchmarks/gpu_suite.py OUT --commit $(git rev-parse --short HEAD)     # one H100/H200, <= 8 min
    python benchmarks/gpu_suite.py OUT --device cpu --tiny                         # the CPU dry run

Writes ``OUT/results.jsonl`` (one JSON object a measurement, also printed) and ``OUT/pytest_gpu.txt``.
Sections, most important first, each skipped (with a ``skipped`` record) once ``--budget-s`` is spent:

1. training at the paper config (bf16, compiled, fused AdamW, batch 32 x T 512, dropout 0.1,
   random tokens): the official PRISM and nanoGPT's GPT (whole model compiled, as their train.py
   does) and prism-lm's PRISM at loss chunk 2048 (each block compiled, as ``run.compile``);
2. decoding at batch 1 (16-token prompt, 256 new, greedy): prism-lm's dynamic, static and compiled
   (CUDA graphs) caches, and the official model's ``generate`` (top-k 1 = greedy; it has no cache);
3. the CUDA-graph check: after warm-up, no graph break, no recompile, no cudagraph skip, and the
   profiler sees ``cudaGraphLaunch`` for the decode steps;
4. ``pytest -m gpu``;
5. prism-lm's GPT and DIFF, the loss-chunk sweep, and batched decoding at batch 8 and 64.

The last record compares against the issue's targets (ratios to the official code in this run).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchmarks.anchors import anchors_dir, build_reference, reference_optimizer  # noqa: E402
from prism_lm.bench import bench_decode, bench_train, device_name, time_training, timed, train_record  # noqa: E402
from prism_lm.config import load_train_config  # noqa: E402
from prism_lm.model import PrismLM, generate  # noqa: E402
from prism_lm.model.attention import PrismAttention  # noqa: E402
from prism_lm.train.metrics import peak_flops  # noqa: E402

TINY = ["model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.block_size=64", "model.vocab_size=512"]


class Suite:
    def __init__(self, out: Path, budget_s: float):
        self.out, self.budget_s, self.t0 = out, budget_s, time.perf_counter()
        self.records: list[dict] = []
        out.mkdir(parents=True, exist_ok=True)
        self.file = open(out / "results.jsonl", "a", encoding="utf-8")

    def emit(self, record: dict) -> dict:
        record = {**record, "elapsed_s": round(time.perf_counter() - self.t0, 1)}
        self.records.append(record)
        line = json.dumps(record)
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()
        return record

    def run(self, name: str, fn, *args, **kwargs) -> dict | None:
        """Run one measurement unless the budget is spent; an exception becomes an ``error`` record."""
        if time.perf_counter() - self.t0 > self.budget_s:
            return self.emit({"section": name, "skipped": "time budget spent"})
        _free()
        try:
            return self.emit({"section": name, **fn(*args, **kwargs)})
        except Exception as exc:  # keep measuring the rest; the record says what failed
            return self.emit({"section": name, "error": f"{type(exc).__name__}: {exc}"[:500]})


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def reference_train(name: str, cfg, anchors: Path, batch: int, steps: int, warmup: int, dev, compile_model: bool):
    torch.manual_seed(0)
    model = build_reference(name, cfg, anchors).to(dev).train()
    if name == "official-prism":
        model.update_prism_lambda(0, 1)
    optimizer = reference_optimizer(model, dev)
    step_model = torch.compile(model) if compile_model else model
    bf16 = dev.type == "cuda"

    def loss_of(x, y):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            return step_model(x, y)[1]

    seconds = time_training(loss_of, model.parameters(), optimizer, cfg.vocab_size, batch, cfg.block_size, steps,
                            warmup, dev)
    n_params = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    return {"bench": "train", "impl": name, "attention": cfg.attention, "compile": compile_model,
            **train_record(cfg, n_params, batch, seconds, dev, "bfloat16" if bf16 else "float32", steps)}


@torch.no_grad()
def reference_decode(cfg, anchors: Path, batch: int, prompt_len: int, new_tokens: int, dev):
    torch.manual_seed(0)
    model = build_reference("official-prism", cfg, anchors).to(dev).eval()
    model.update_prism_lambda(0, 1)
    prompt = torch.randint(0, cfg.vocab_size, (batch, prompt_len), device=dev)
    bf16 = dev.type == "cuda"

    def run(n):  # top_k=1: the official sampler keeps one token, i.e. greedy
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            return model.generate(prompt, n, temperature=1.0, top_k=1)

    run(min(8, new_tokens))
    seconds, out = timed(lambda: run(new_tokens), dev)
    made = out.size(1) - prompt_len
    return {"bench": "decode", "impl": "official-prism", "attention": "prism", "cache": "none (official)",
            "device": device_name(dev), "dtype": "bfloat16" if bf16 else "float32", "batch_size": batch,
            "prompt_len": prompt_len, "new_tokens": made, "seconds": seconds,
            "tokens_per_s": batch * made / seconds, "ms_per_token": 1000 * seconds / made}


@torch.no_grad()
def cuda_graph_check(cfg, prompt_len: int, new_tokens: int, dev):
    """Compile the decode step with CUDA graphs, warm up twice, then watch a third generation."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # compile from scratch, so the counters describe this check alone
    counters.clear()
    torch.manual_seed(0)
    model = PrismLM(cfg).to(dev).eval()
    if dev.type == "cuda":
        model = model.to(torch.bfloat16)
    mode = "reduce-overhead" if dev.type == "cuda" else "default"
    step = torch.compile(model.decode_step, mode=mode, fullgraph=True)
    prompt = torch.randint(0, cfg.vocab_size, (1, prompt_len), device=dev)
    options = dict(temperature=0.0, static_cache=True, decode_step=step)
    warm = [timed(lambda: generate(model, prompt, new_tokens, **options), dev)[0] for _ in range(2)]
    graphs, skips = counters["stats"]["unique_graphs"], counters["inductor"]["cudagraph_skips"]
    activities = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        seconds, out = timed(lambda: generate(model, prompt, new_tokens, **options), dev)
    events = {e.key: e.count for e in prof.key_averages()}
    result = {"bench": "cuda_graphs", "device": device_name(dev), "new_tokens": out.size(1) - prompt_len,
              "warmup_seconds": warm, "seconds": seconds,
              "graph_breaks": sum(counters["graph_break"].values()),
              "graphs_compiled": counters["stats"]["unique_graphs"],
              "recompiles_after_warmup": counters["stats"]["unique_graphs"] - graphs,
              "cudagraph_skips": counters["inductor"]["cudagraph_skips"],
              "cudagraph_skips_after_warmup": counters["inductor"]["cudagraph_skips"] - skips,
              "cudaGraphLaunch": events.get("cudaGraphLaunch", 0),
              "cudaLaunchKernel": events.get("cudaLaunchKernel", 0)}
    steps = result["new_tokens"] - 1  # the prefill runs uncompiled
    result["captured"] = (result["graph_breaks"] == 0 and result["recompiles_after_warmup"] == 0
                          and result["cudagraph_skips"] == 0 and result["cudaGraphLaunch"] >= steps)
    return result


def run_pytest(out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    (out / "pytest_gpu.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {"bench": "pytest -m gpu", "returncode": proc.returncode, "summary": lines[-1] if lines else ""}


BACKEND_ORDERS = {"default": None,
                  "cudnn-first": ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"),
                  "no-cudnn": ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")}


def sdpa_backends(name: str):
    """SDPA's own choice ("default") or a backend priority, as a context manager."""
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = BACKEND_ORDERS[name]
    if order is None:
        return contextlib.nullcontext()
    return sdpa_kernel([getattr(SDPBackend, b) for b in order], set_priority=True)


@torch.no_grad()
def sdpa_probe(cfg, batch: int, prompt_len: int, dev):
    """Which SDPA backend runs PRISM's shapes, and what one decode-shaped call costs with and without cuDNN.

    Decode shape: one query against a key length that grows by one per call, as a dynamic cache does.
    """
    H, D = 2 * cfg.n_head, PrismAttention.head_width(cfg)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    train_q = torch.randn(batch, H, cfg.block_size, D, device=dev, dtype=dtype)
    one_q = torch.randn(1, H, 1, D, device=dev, dtype=dtype)
    out = {"bench": "sdpa", "device": device_name(dev), "heads": H, "head_dim": D,
           "choice_train": int(torch._fused_sdp_choice(train_q, train_q, train_q, is_causal=True)),
           "choice_decode": int(torch._fused_sdp_choice(one_q, train_q[:1, :, :prompt_len],
                                                        train_q[:1, :, :prompt_len])),
           "backend_ids": {name: int(b) for name, b in torch.nn.attention.SDPBackend.__members__.items()}}
    keys = [train_q[:1, :, : prompt_len + i] for i in range(32)]

    def calls():
        return [torch.nn.functional.scaled_dot_product_attention(one_q, k, k) for k in keys]

    for name in ("default", "no-cudnn"):
        with sdpa_backends(name):
            out[f"decode_call_ms_{name}"] = 1000 * timed(calls, dev)[0] / len(keys)
    return out


def targets(records: list[dict]) -> dict:
    """Issue 15's targets as ratios to the official code measured in the same run."""
    def find(**match):
        return next((r for r in records if all(r.get(k) == v for k, v in match.items()) and "error" not in r),
                    None)

    official = find(bench="train", impl="official-prism")
    ours = [r for r in records if r.get("bench") == "train" and r.get("impl") == "prism-lm"
            and r.get("attention") == "prism" and "error" not in r]
    best = max(ours, key=lambda r: r["tokens_per_s"], default=None)
    leanest = min(ours, key=lambda r: r["peak_mem_gib"] or 0, default=None)
    dec = [r for r in records if r.get("bench") == "decode" and r.get("impl") == "prism-lm"
           and r.get("batch_size") == 1 and "error" not in r]
    fastest = max(dec, key=lambda r: r["tokens_per_s"], default=None)
    official_dec = find(bench="decode", impl="official-prism")
    out = {"bench": "targets"}
    if official and best:
        out["train_speedup"] = best["tokens_per_s"] / official["tokens_per_s"]
        out["train_speedup_config"] = {"loss_chunk": best["loss_chunk"]}
        out["train_mfu"] = best["mfu"]
        out["train_speedup_ok"] = out["train_speedup"] >= 2.0
        out["train_mfu_ok"] = best["mfu"] is not None and best["mfu"] >= 0.35
    if official and leanest and official.get("peak_mem_gib") and leanest.get("peak_mem_gib"):
        out["memory_ratio"] = leanest["peak_mem_gib"] / official["peak_mem_gib"]
        out["memory_ratio_config"] = {"loss_chunk": leanest["loss_chunk"]}
        out["memory_ok"] = out["memory_ratio"] <= 0.5
    if fastest:
        out["decode_tokens_per_s"] = fastest["tokens_per_s"]
        out["decode_cache"] = fastest["cache"]
        out["decode_ok"] = fastest["tokens_per_s"] >= 1500
        if official_dec:
            out["decode_speedup"] = fastest["tokens_per_s"] / official_dec["tokens_per_s"]
            out["decode_speedup_ok"] = out["decode_speedup"] >= 25
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for results.jsonl and pytest_gpu.txt")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="tiny widths and few steps (the CPU dry run)")
    parser.add_argument("--anchors", default=None, help="folder with the reference model files")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no new section after this")
    parser.add_argument("--commit", default=None, help="recorded in the first line")
    parser.add_argument("--no-compile", action="store_true", help="eager training steps (fast CPU checks)")
    parser.add_argument("--no-pytest", action="store_true", help="skip `pytest -m gpu`")
    parser.add_argument("--only", nargs="+", metavar="SECTION", help="run these sections alone, in suite order")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available (use --device cpu --tiny for the dry run)",
              file=sys.stderr)
        return 2
    anchors = anchors_dir(args.anchors)
    if anchors is None:
        print("error: reference models not found (pass --anchors DIR holding prism_official_model.py and "
              "nanogpt_model.py)", file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as nanoGPT's train.py
    cfg = load_train_config("prism-50m-tinystories", TINY if args.tiny else []).model
    batch, steps, warmup = (4, 2, 1) if args.tiny else (32, 20, 5)
    prompt_len, new_tokens = (8, 24) if args.tiny else (16, 256)
    compiled = not args.no_compile
    suite = Suite(Path(args.out), args.budget_s)
    suite.emit({"section": "env", "commit": args.commit, "device": device_name(dev), "torch": torch.__version__,
                "python": platform.python_version(), "peak_bf16_flops": peak_flops(dev), "tiny": args.tiny,
                "model": dataclasses.asdict(cfg)})

    def ours(kind: str, loss_chunk: int, backends: str = "default"):
        kind_cfg = dataclasses.replace(cfg, attention=kind)
        with sdpa_backends(backends):
            row = bench_train(kind_cfg, batch, steps, warmup, args.device, "auto", compiled, False, loss_chunk)
        return {"impl": "prism-lm", "sdpa_backends": backends, **row}

    def decode(cache: str, b: int = 1):
        return {"impl": "prism-lm", **bench_decode(cfg, b, prompt_len, new_tokens, cache, args.device)}

    gpt_cfg = dataclasses.replace(cfg, attention="gpt")
    sections = {
        "train-reference": [(reference_train, "official-prism", cfg, anchors, batch, steps, warmup, dev, compiled),
                            (reference_train, "nanogpt", gpt_cfg, anchors, batch, steps, warmup, dev, compiled)],
        "train-prism": [(ours, "prism", 2048)],
        "decode-batch1": [(decode, c) for c in ("compiled", "dynamic", "static")]
                         + [(reference_decode, cfg, anchors, 1, prompt_len, new_tokens, dev)],
        "cuda-graphs": [(cuda_graph_check, cfg, prompt_len, new_tokens, dev)],
        "pytest": [(run_pytest, suite.out)],
        "sdpa-backends": [(sdpa_probe, cfg, batch, prompt_len, dev), (ours, "prism", 2048, "cudnn-first")],
        "train-kinds": [(ours, "gpt", 2048), (ours, "diff", 2048)],
        "loss-chunk-sweep": [(ours, "prism", c) for c in (0, 8192)],
        "decode-batched": [(decode, c, b) for b in (8, 64) for c in ("dynamic", "compiled")],
    }
    unknown = [name for name in args.only or [] if name not in sections]
    if unknown:
        print(f"error: unknown section {unknown[0]!r} (sections: {', '.join(sections)})", file=sys.stderr)
        return 2
    for name, calls in sections.items():
        if (args.only and name not in args.only) or (name == "pytest" and args.no_pytest):
            continue
        for fn, *call_args in calls:
            suite.run(name, fn, *call_args)
    suite.emit({"section": "targets", **targets(suite.records)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
