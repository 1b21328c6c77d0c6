"""The length probe on the embedded story corpus (issue 32): at which step does a baseline's
recall-token loss approach the other tokens', and does it find the antecedents (selectivity above
its lag-matched null)? Reads every step checkpoint of one training run and prints, per step, the
recall-token and other-token loss, their difference (recall_excess, C3's gate: below 0.5 nat), the
antecedent selectivity over all heads (C3's other gate: above 0) and the answer accuracy, on 32 windows of the
val split (point values: the sweep's gates judge the same measures with intervals over seeds).

    prism data prepare --source embedded:20000 --compact-vocab --val-fraction 0.05 --out data/emb20k
    prism train tiny-gpt-cpu --set data.dir=data/emb20k --set model.attention=gpt-rope \\
        --set run.max_iters=3200 --set optim.lr_decay_iters=3200 --set run.checkpoint_interval=400 \\
        --set run.keep_checkpoints=10 --set run.out_dir=runs/lenprobe
    python benchmarks/length_probe.py runs/lenprobe

Measured 2026-12-06 on the 2-core dev machine, beside a two-worker sweep (one thread, niced):
training 3200 steps took 25 minutes, this script 1 min 50 s (32 windows per checkpoint). Results in
benchmarks/RESULTS.md ("Regime probes").
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prism_lm.analysis.heads import head_statistics  # noqa: E402
from prism_lm.checkpoint.model import load_model, read_model_config  # noqa: E402
from prism_lm.data.shards import ShardSet  # noqa: E402
from prism_lm.run_dir import RunDir, recorded_data_dir  # noqa: E402

WINDOWS = 32


def main(run: str) -> None:
    steps = RunDir(run).steps()
    if not steps:
        raise SystemExit(f"{run}: no step checkpoints (train with run.keep_checkpoints > 1)")
    val = ShardSet(recorded_data_dir(steps[-1]), "val")
    print("| step | recall-token loss | other-token loss | recall excess | selectivity (all heads) | answer accuracy |")
    print("|---|---|---|---|---|---|")
    for checkpoint in steps:
        step = read_model_config(checkpoint)[1].get("step")
        stats = head_statistics(load_model(checkpoint).eval(), val, max_windows=WINDOWS)
        recall = stats["recall_loss"]
        selectivity = np.mean([e["selectivity"] for e in stats["heads"]])
        print(f"| {step} | {recall['recall_mean']:.3f} | {recall['other_mean']:.3f} | "
              f"{recall['recall_mean'] - recall['other_mean']:.3f} | {selectivity:+.4f} | "
              f"{recall['recall_accuracy']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1])
