"""Can the cross-stream kernel see an exact resonance at all, in a given window? (C4's gate, issue 32.)

At step 0 nothing is learned, so the only difference between two PRISMs built from one seed with
different multipliers m is their position code. With m = 1 under frequency scaling both streams turn
at the same frequencies (an exact resonance by construction); with π they do not. This script builds
the untrained tiny PRISM for each m and seed, measures ``cross_kernel`` (the logit-versus-lag
correlation of signal head h and noise head h, ``analysis/heads.py``) on the val split of a prepared
data folder, and prints each m minus π, paired by seed, with its 95% t interval: the gate of
``experiments/c4-multiplier-tiny.toml`` (init_cross_kernel, m = 1 above π), which can fail.

    prism data prepare --source embedded:6000 --compact-vocab --val-fraction 0.05 --out data/emb6k
    python benchmarks/kernel_at_init.py data/emb6k                 # the tiny block, 128 tokens
    python benchmarks/kernel_at_init.py data/emb6k --block 32      # a short window

Measured 2026-12-07 on the 2-core dev machine (embedded:40000's val split, 5 seeds, 16 windows; 60 s at
block 128, 20 s at 32). m = 1 minus π, 95% t interval over 5 seed-paired differences:
- frequency scaling, block 128 (C4's regime): +0.106 [0.081, 0.131] (√10 +0.006 [0.003, 0.009], 355/113 0.000);
- frequency scaling, block 32: +0.109 [0.069, 0.150];
- base scaling (the official), block 128: +0.055 [0.040, 0.070];
- base scaling, block 32: +0.003 [−0.007, 0.013]: the gate fails there (the induction regime's windows).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prism_lm.analysis.heads import head_statistics  # noqa: E402
from prism_lm.bounds import MAX_POSITIONS, BoundedInt  # noqa: E402
from prism_lm.checkpoint.model import initial_model  # noqa: E402
from prism_lm.config import load_train_config  # noqa: E402
from prism_lm.data.shards import ShardSet  # noqa: E402
from prism_lm.errors import PrismError  # noqa: E402
from prism_lm.stats import paired_difference  # noqa: E402

MULTIPLIERS = {"m = 1": "1.0", "pi": "pi", "355/113": "355/113", "sqrt10": "3.1622776601683795"}


def kernel_at_init(val: ShardSet, multiplier: str, seed: int, block: int, windows: int, scaling: str) -> float:
    cfg = load_train_config(ROOT / "configs" / "tiny-prism-cpu.toml", [
        f"model.prism.freq_multiplier={multiplier}", f"model.prism.rope_scaling={scaling}",
        f"run.seed={seed}", f"model.block_size={block}"])
    cfg.model.vocab_size = val.vocab_size
    with torch.no_grad():
        stats = head_statistics(initial_model(cfg).eval(), val, max_windows=windows)
    return stats["logit_lag"]["mean_abs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="a prepared data folder (prism data prepare)")
    parser.add_argument("--block", type=BoundedInt(2, MAX_POSITIONS, high_open=False), default=128,
                        help="the window, in tokens")
    parser.add_argument("--seeds", type=BoundedInt(2, 1000, high_open=False), default=5,
                        help="seeds 0..N-1 (two or more: the interval is over their paired differences)")
    parser.add_argument("--windows", type=BoundedInt(1, 2**20), default=16, help="val windows per model")
    parser.add_argument("--scaling", choices=("frequency", "base"), default="frequency",
                        help="how m enters the position code (C4's frequency arms, or the official base scaling)")
    args = parser.parse_args()
    try:
        val = ShardSet(args.data, "val")
        values = {name: {s: kernel_at_init(val, m, s, args.block, args.windows, args.scaling)
                         for s in range(args.seeds)} for name, m in MULTIPLIERS.items()}
    except PrismError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"cross_kernel at step 0, {args.scaling} scaling, block {args.block}, {args.seeds} seeds "
          "(95% t interval of the paired difference)")
    print(f"pi: {np.mean(list(values['pi'].values())):.3f}")
    for name in ("m = 1", "sqrt10", "355/113"):
        d = paired_difference(values[name], values["pi"])
        print(f"{name}: {np.mean(list(values[name].values())):.3f}; minus pi {d['mean']:+.4f} "
              f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]")


if __name__ == "__main__":
    main()
