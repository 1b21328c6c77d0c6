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

Measured 2026-12-07 with the low-order ratios added (same data, frequency scaling, block 128), each m
minus π: √(4/3) +0.115 [0.100, 0.129] (as high as m = 1), √(3/2) +0.024 [0.005, 0.043], √2 +0.009
[−0.020, 0.038], √10 +0.006 [0.003, 0.009]. The lines printed beside them say why the kernel does not
follow the ratio's rational order: what locks the streams is the ratio m² in rungs of the ladder
(consecutive pairs turn 10000^(1/32) = 1.3335 apart at D = 64). 4/3 is 1.000 rung (locks for 686k
tokens), π² 7.954 and √10's 10 exactly 8 (π locks for 8.5k tokens, pair 14 with 6), while 3/2 and 2
sit between rungs (lock windows 822 and 950). So on a 128-token window π is, at order 1, as resonant
as √10, and C4's primary compares two near-identical position codes.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY_PRISM = ROOT / "configs" / "tiny-prism-cpu.toml"  # the tiny model C4's claim files train
sys.path.insert(0, str(ROOT))

from prism_lm.analysis.heads import head_statistics  # noqa: E402
from prism_lm.analysis.spectral import (  # noqa: E402
    closest_approach,
    distinguishing_window,
    fixed_pairs,
    ladder_rungs,
    stream_frequencies_of,
)
from prism_lm.bounds import MAX_POSITIONS, BoundedInt  # noqa: E402
from prism_lm.checkpoint.model import initial_model  # noqa: E402
from prism_lm.config import load_train_config  # noqa: E402
from prism_lm.data.shards import ShardSet  # noqa: E402
from prism_lm.errors import PrismError  # noqa: E402
from prism_lm.model.config import ModelConfig, resolve_multiplier  # noqa: E402
from prism_lm.stats import paired_difference  # noqa: E402

# Each m and the frequency ratio m² between the streams it sets under frequency scaling: exact (1),
# low-order rational (4/3, 3/2, 2), high-order (10), and π's rational look-alike 355/113.
MULTIPLIERS = {"pi": "pi", "m = 1": "1.0", "sqrt(4/3)": repr((4 / 3) ** 0.5), "sqrt(3/2)": repr(1.5 ** 0.5),
               "sqrt2": repr(2 ** 0.5), "sqrt10": repr(10 ** 0.5), "355/113": "355/113"}


def kernel_at_init(val: ShardSet, multiplier: str, seed: int, block: int, windows: int, scaling: str) -> float:
    cfg = load_train_config(TINY_PRISM, [
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
    for name in [m for m in MULTIPLIERS if m != "pi"]:
        d = paired_difference(values[name], values["pi"])
        print(f"{name}: {np.mean(list(values[name].values())):.3f}; minus pi {d['mean']:+.4f} "
              f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]")
    print(f"beside it, from the frequencies alone (order 1, all pairs, {args.block}-token window):")
    model = load_train_config(TINY_PRISM, [f"model.block_size={args.block}"]).model
    for name, m in MULTIPLIERS.items():
        print("  " + analytic_line(model, name, float(resolve_multiplier(m)), args.block, args.scaling))


def analytic_line(model: ModelConfig, name: str, m: float, block: int, scaling: str) -> str:
    """m's ladder position and how close its streams come to locking: what the step-0 kernel is read
    against (a lock window longer than the block looks exactly resonant on it)."""
    close = closest_approach(*stream_frequencies_of(model, m, scaling), block, max_order=1, skip=fixed_pairs(scaling))
    lock = "exact" if close["lock_window"] is None else f"{close['lock_window']:,.0f} tokens"
    rungs = f"ratio {m * m:.4g} = {ladder_rungs(model, m):.3f} rungs; " if scaling == "frequency" else ""
    apart = ("" if name == "pi" else
             f"; differs from pi's code from {distinguishing_window(model, math.pi, m, scaling):,.1f} tokens")
    return f"{name}: {rungs}lock window {lock} (pair {close['pair']}){apart}"


if __name__ == "__main__":
    main()
