"""``prism bench``: training and decoding throughput, one JSON line per measured variant.

Design choices:
- Random tokens, so the numbers measure the model and the optimizer, not the data pipeline.
- Training steps are timed as the loop runs them: autocast (bf16 on CUDA), fused AdamW on CUDA,
  clipping, optional ``torch.compile`` applied from outside by ``wrap_model`` (``run.compile``).
  Warm-up steps (compilation, allocator) are excluded; the clock stops after a device
  synchronisation, and nothing in the timed loop reads a value back to the host.
- Every variant of a run uses the same shapes, so PRISM, GPT, DIFF and the eager path are
  comparable line by line. MFU counts each attention kind's own FLOPs (``flops_per_token``).
- Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA; on CPU it is not measured (null).
"""

from __future__ import annotations

import dataclasses
import platform
import time

import torch

from prism_lm.bounds import bounded_int
from prism_lm.config import ModelConfig, RunConfig, TrainConfig, resolve_vocab_size
from prism_lm.data.shards import manifest_vocab_size
from prism_lm.devices import resolve_device
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM, generate
from prism_lm.train.loop import autocast_for, build_optimizer
from prism_lm.train.metrics import flops_per_token, peak_flops
from prism_lm.train.parallel import World, wrap_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _uses_bf16(device: torch.device, dtype: str) -> bool:
    return dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")


def _model(cfg: ModelConfig, device: torch.device) -> PrismLM:
    torch.manual_seed(0)
    return PrismLM(cfg).to(device)


def time_training(loss_of, parameters, optimizer, vocab_size: int, batch_size: int, seq_len: int, steps: int,
                  warmup: int, dev: torch.device) -> float:
    """Seconds per training step: ``loss_of(x, y)``, backward, clip at 1.0, ``optimizer.step``.

    Shared by prism-lm's models and the reference implementations, so both are timed alike.
    """
    tokens = torch.randint(0, vocab_size, (warmup + steps, batch_size, seq_len + 1), device=dev)
    inputs, targets = tokens[..., :-1].contiguous(), tokens[..., 1:].contiguous()
    parameters = list(parameters)

    def step(i: int) -> None:
        loss_of(inputs[i], targets[i]).backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(i)
    _sync(dev)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    _sync(dev)
    return (time.perf_counter() - t0) / steps


def timed(fn, dev: torch.device, repeats: int = 1):
    """(seconds per call, last result) of ``fn()``, the clock read after a device synchronisation."""
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    _sync(dev)
    return (time.perf_counter() - t0) / repeats, out


def train_record(cfg: ModelConfig, n_params: int, batch_size: int, seconds: float, dev: torch.device,
                 dtype: str, steps: int) -> dict:
    """The measured numbers of one training variant: tokens/s, step time, MFU (``cfg``'s FLOPs), memory."""
    tps = batch_size * cfg.block_size / seconds
    peak = peak_flops(dev)
    flops = flops_per_token(cfg, cfg.block_size)
    return {"device": device_name(dev), "dtype": dtype, "batch_size": batch_size, "seq_len": cfg.block_size,
            "params": n_params, "tokens_per_s": tps, "step_ms": 1000 * seconds, "flops_per_token": flops,
            "mfu": tps * flops / peak if peak else None,
            "peak_mem_gib": _peak_gib(dev), "steps": steps}


def bench_train(cfg: ModelConfig, batch_size: int, steps: int = 10, warmup: int = 3, device: str = "auto",
                dtype: str = "auto", compile_model: bool = False, eager: bool = False,
                loss_chunk: int = 0) -> dict:
    """Tokens/s, step time, MFU and peak memory of full training steps (forward, backward, AdamW).

    The optimizer, autocast and compilation (``run.compile``: ``wrap_model``) are the training
    loop's own, with the paper's optimizer settings.
    """
    dev = resolve_device(device)
    _reset_memory(dev)
    model = _model(cfg, dev)
    model.train()
    step_model = wrap_model(model, World(device=dev), "ddp", compile_model)
    used_dtype = "bfloat16" if _uses_bf16(dev, dtype) else "float32"
    train_cfg = TrainConfig(model=cfg, run=RunConfig(dtype=used_dtype))
    optimizer, _ = build_optimizer(model, train_cfg, dev)
    ctx = autocast_for(train_cfg, dev)

    def loss_of(x, y):
        with ctx:
            return step_model(x, y, loss_chunk=loss_chunk, eager=eager).loss

    seconds = time_training(loss_of, model.parameters(), optimizer, cfg.vocab_size, batch_size, cfg.block_size,
                            steps, warmup, dev)
    return {"bench": "train", **_variant(cfg, eager, compile_model, loss_chunk),
            **train_record(cfg, model.num_params(), batch_size, seconds, dev, used_dtype, steps)}


CACHE_MODES = ("dynamic", "static", "compiled", "none")


@torch.no_grad()
def bench_decode(cfg: ModelConfig, batch_size: int = 1, prompt_len: int = 16, new_tokens: int = 256,
                 cache: str = "dynamic", device: str = "auto", dtype: str = "auto", repeats: int = 1) -> dict:
    """Greedy decoding throughput: new tokens per second over all rows, prefill included.

    ``cache``: "dynamic" (growing KV cache), "static" (fixed-shape buffers), "compiled" (static,
    with ``decode_step`` compiled: CUDA graphs on CUDA via mode="reduce-overhead"), or "none"
    (every step recomputes the whole prefix).
    """
    if cache not in CACHE_MODES:
        raise PrismError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    dev = resolve_device(device)
    if prompt_len + new_tokens > cfg.block_size:
        raise PrismError(f"prompt_len + new_tokens ({prompt_len + new_tokens}) exceeds block_size {cfg.block_size}")
    _reset_memory(dev)
    model = _model(cfg, dev).eval()
    if _uses_bf16(dev, dtype):
        model = model.to(torch.bfloat16)
        used_dtype = "bfloat16"
    else:
        used_dtype = "float32"
    step = None
    if cache == "compiled":
        mode = "reduce-overhead" if dev.type == "cuda" else "default"
        step = torch.compile(model.decode_step, mode=mode, fullgraph=True)
    options = {"temperature": 0.0, "use_cache": cache != "none", "static_cache": cache in ("static", "compiled"),
               "decode_step": step}
    prompt = torch.randint(0, cfg.vocab_size, (batch_size, prompt_len), device=dev)
    # warm-up; compiled steps need the timed run's cache length, or they would compile again
    generate(model, prompt, new_tokens if step else min(8, new_tokens), **options)
    seconds, out = timed(lambda: generate(model, prompt, new_tokens, **options), dev, repeats)
    return {"bench": "decode", "attention": cfg.attention, "cache": cache, "device": device_name(dev),
            "dtype": used_dtype, "batch_size": batch_size, "prompt_len": prompt_len,
            "new_tokens": out.size(1) - prompt_len, "seconds": seconds,
            "tokens_per_s": batch_size * (out.size(1) - prompt_len) / seconds,
            "ms_per_token": 1000 * seconds / (out.size(1) - prompt_len), "peak_mem_gib": _peak_gib(dev)}


def _variant(cfg: ModelConfig, eager: bool, compiled: bool, loss_chunk: int) -> dict:
    return {"attention": cfg.attention, "path": "eager" if eager else "fast", "compile": compiled,
            "loss_chunk": loss_chunk, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd}


def with_attention(cfg: ModelConfig, kind: str) -> ModelConfig:
    """The same dimensions with another attention kind (the others ignore the PRISM knobs)."""
    return dataclasses.replace(cfg, attention=kind)


def bench_model_config(cfg: TrainConfig) -> ModelConfig:
    """The model a training config describes, its vocabulary resolved as training resolves it
    (``model.vocab_size = 0``: from the manifest in ``data.dir``)."""
    data_vocab = manifest_vocab_size(cfg.data.dir)
    return dataclasses.replace(cfg.model, vocab_size=resolve_vocab_size(cfg.model.vocab_size, data_vocab))


def _at_least(low: int, **values: int) -> None:
    for name, value in values.items():
        bounded_int(value, f"--{name.replace('_', '-')}", low)


def sweep_train(cfg: TrainConfig, kinds: list[str], paths: list[str], loss_chunks: list[int] | None,
                batch_size: int | None, steps: int, warmup: int, device: str, dtype: str, compile_model: bool):
    """``bench_train`` for every kind x path ("fast" | "eager") x loss chunk; yields one record each."""
    _at_least(1, steps=steps)
    _at_least(0, warmup=warmup)
    if batch_size is not None:
        _at_least(1, batch_size=batch_size)
    for chunk in loss_chunks or []:
        _at_least(0, loss_chunk=chunk)
    model_cfg = bench_model_config(cfg)
    for kind in kinds:
        for path in paths:
            for chunk in loss_chunks if loss_chunks is not None else [cfg.run.loss_chunk]:
                yield bench_train(with_attention(model_cfg, kind), batch_size or cfg.run.batch_size, steps, warmup,
                                  device, dtype, compile_model, path == "eager", chunk)


def sweep_decode(cfg: TrainConfig, kinds: list[str], batch_sizes: list[int], caches: list[str], prompt_len: int,
                 new_tokens: int, device: str, dtype: str):
    """``bench_decode`` for every kind x batch size x cache mode; yields one record each."""
    _at_least(1, prompt_len=prompt_len, new_tokens=new_tokens)
    for batch in batch_sizes:
        _at_least(1, batch_size=batch)
    model_cfg = bench_model_config(cfg)
    for kind in kinds:
        for batch in batch_sizes:
            for cache in caches:
                yield bench_decode(with_attention(model_cfg, kind), batch, prompt_len, new_tokens, cache, device, dtype)
