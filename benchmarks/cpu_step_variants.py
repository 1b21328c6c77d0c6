"""prism-lm's training-step variants on this CPU, in paired rounds (``paired_timing``): torch's
dropout (``F.dropout``, and SDPA's math path for attention with dropout) against prism-lm's CPU
paths (``model/dropout.py`` masks, ``attention/common.py: cpu_training_attention``), each part alone, the plain
head against the chunked one, the for-loop AdamW against the fused one, and, with ``--old-loss FILE``
(a ``prism_lm/model/loss.py`` of an earlier commit, e.g. ``git show 85937ca:prism_lm/model/loss.py``),
that file's chunked loss against today's.

    python benchmarks/cpu_step_variants.py [--rounds 21] [--old-loss FILE] [--only BASELINE ...]

Paper widths, T 256, batch 4, fp32, dropout 0.1; one model, each variant its own step. Prints one
JSON line per comparison. Measured time: about 2 minutes per comparison at 21 rounds on the first
development machine, 4.5 minutes at 15 rounds on the slower one of RESULTS.md's issue-25 section.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.paired_timing import paired_rounds  # noqa: E402
from prism_lm.bench import time_training  # noqa: E402
from prism_lm.config import RunConfig, TrainConfig, load_train_config  # noqa: E402
from prism_lm.model import PrismLM  # noqa: E402
from prism_lm.model import dropout as dropout_module  # noqa: E402
from prism_lm.model.attention import common as attention_module  # noqa: E402
from prism_lm.train.loop import build_optimizer  # noqa: E402


@contextlib.contextmanager
def torch_paths(residual: bool, attention: bool):
    """Swap prism-lm's CPU dropout (residual sites) and/or CPU attention for torch's own, for one step."""
    saved = dropout_module.dropout, attention_module.cpu_training_attention
    if residual:
        dropout_module.dropout = lambda x, p, training=True: F.dropout(x, p, training=training)
    if attention:
        attention_module.cpu_training_attention = lambda q, k, v, p: F.scaled_dot_product_attention(
            q, k, v, dropout_p=p, is_causal=True)
    try:
        yield
    finally:
        dropout_module.dropout, attention_module.cpu_training_attention = saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--old-loss", default=None, help="an earlier loss.py to time against today's")
    parser.add_argument("--only", nargs="+", default=None, metavar="BASELINE",
                        help="run only the comparisons whose baseline is named (default: all)")
    args = parser.parse_args(argv)
    cfg = load_train_config("prism-50m-tinystories", [f"model.block_size={args.seq_len}"]).model
    torch.manual_seed(0)
    model = PrismLM(cfg).train()
    dev = torch.device("cpu")
    fused, _ = build_optimizer(model, TrainConfig(model=cfg, run=RunConfig(dtype="float32")), dev)
    loop = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]} for g in fused.param_groups],
                             lr=6e-4, betas=(0.9, 0.95), foreach=False)

    def step(loss_of, opt):
        return lambda: time_training(loss_of, model.parameters(), opt, cfg.vocab_size, args.batch_size,
                                     cfg.block_size, 1, 0, dev)

    chunked = step(lambda x, y: model(x, y, loss_chunk=2048).loss, fused)

    def with_torch(residual: bool, attention: bool):
        def run():
            with torch_paths(residual, attention):
                return chunked()
        return run

    comparisons = [("torch dropout and SDPA", with_torch(True, True), "prism-lm CPU dropout and attention", chunked),
                   ("SDPA attention", with_torch(False, True), "cpu_training_attention", chunked),
                   ("torch residual dropout", with_torch(True, False), "16-bit residual dropout", chunked),
                   ("plain loss", step(lambda x, y: model(x, y).loss, fused), "chunked loss", chunked),
                   ("for-loop AdamW", step(lambda x, y: model(x, y, loss_chunk=2048).loss, loop), "fused AdamW",
                    chunked)]
    if args.old_loss:
        spec = importlib.util.spec_from_file_location("old_loss", args.old_loss)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        old_step = step(lambda x, y: old.chunked_linear_cross_entropy(model.hidden_states(x)[0], model.lm_head.weight,
                                                                      y, 2048), fused)
        comparisons.insert(0, ("old chunked loss", old_step, "chunked loss", chunked))
    if args.only:
        unknown = set(args.only) - {a for a, *_ in comparisons}
        if unknown:
            print(f"error: no comparison with baseline {sorted(unknown)}", file=sys.stderr)
            return 2
        comparisons = [c for c in comparisons if c[0] in args.only]
    for a, fa, b, fb in comparisons:
        out = paired_rounds({a: fa, b: fb}, rounds=args.rounds, warmup=2)
        print(json.dumps({**out["ratio"], "median_s": {k: statistics.median(v) for k, v in out["times"].items()}}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
