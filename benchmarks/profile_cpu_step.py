"""Where a training step's time goes on this CPU: torch.profiler over prism-lm's PRISM (and, with
``--official``, the official PRISM) at the side-by-side shape, top operators by self CPU time.

    python benchmarks/profile_cpu_step.py [--steps 3] [--official] [--top 15]

Paper widths, T 256, batch 4, fp32, the paper config's loss path; one warm-up step, then
``--steps`` profiled steps (forward, backward, clip, AdamW). Prints one JSON line per operator
(name, self CPU ms per step, share of the step) and a total. About 1 minute per model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.anchors import anchors_dir, build_reference, reference_optimizer  # noqa: E402
from prism_lm.bench import time_training  # noqa: E402
from prism_lm.config import RunConfig, TrainConfig, load_train_config  # noqa: E402
from prism_lm.model import PrismLM  # noqa: E402
from prism_lm.train.loop import build_optimizer  # noqa: E402


def profile_steps(loss_of, model, opt, cfg, batch_size: int, steps: int, top: int, label: str) -> list[dict]:
    time_training(loss_of, model.parameters(), opt, cfg.vocab_size, batch_size, cfg.block_size, 1, 0,
                  torch.device("cpu"))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        time_training(loss_of, model.parameters(), opt, cfg.vocab_size, batch_size, cfg.block_size, steps, 0,
                      torch.device("cpu"))
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [{"model": label, "op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1000 / steps,
             "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps} for e in events[:top]]
    rows.append({"model": label, "op": "(total)", "self_ms_per_step": total / 1000 / steps, "share": 1.0})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--official", action="store_true")
    args = parser.parse_args(argv)
    train_cfg = load_train_config("prism-50m-tinystories", [f"model.block_size={args.seq_len}"])
    cfg = train_cfg.model
    torch.manual_seed(0)
    ours = PrismLM(cfg).train()
    opt, _ = build_optimizer(ours, TrainConfig(model=cfg, run=RunConfig(dtype="float32")), torch.device("cpu"))
    chunk = train_cfg.run.loss_chunk
    rows = profile_steps(lambda x, y: ours(x, y, loss_chunk=chunk).loss, ours, opt, cfg, args.batch_size, args.steps,
                         args.top, "prism-lm")
    if args.official:
        anchors = anchors_dir()
        if anchors is None:
            print("error: reference models not found", file=sys.stderr)
            return 2
        official = build_reference("official-prism", cfg, anchors).train()
        official.update_prism_lambda(0, 1)
        rows += profile_steps(lambda x, y: official(x, y)[1], official, reference_optimizer(official, torch.device(
            "cpu")), cfg, args.batch_size, args.steps, args.top, "official-prism")
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
