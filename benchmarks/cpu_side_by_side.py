"""prism-lm's PRISM beside the official PRISM on this CPU, in one process, in paired rounds.

    python benchmarks/cpu_side_by_side.py [--rounds 31] [--decode-rounds 7] [--loss-paths] [--anchors DIR]

Paper widths (8 layers, 8 heads, C 512, vocabulary 50,304) with T 256, batch 4, fp32, no compile.
Training: ``--rounds`` rounds of one prism-lm step and one official step in a shuffled order
(same random-token shapes, each side its own AdamW), the method of ``paired_timing``: the median of
the per-round ratios and its distribution-free 95% interval. ``--loss-paths``: the same for
prism-lm's two loss paths (the chunked head against the plain one) at this shape. Decoding: batch 1,
16-token prompt, ``--new-tokens`` greedy tokens; prism-lm with its KV cache, the official
``generate`` (top-k 1) without one. Prints JSON lines: every round, then the ratios.
Measured time: about 4 minutes with the defaults (7 with ``--loss-paths``) on the first development
machine, 12 on the slower one of RESULTS.md's issue-25 section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.anchors import anchors_dir, build_reference, reference_optimizer  # noqa: E402
from benchmarks.paired_timing import paired_rounds  # noqa: E402
from prism_lm.bench import device_name, time_training  # noqa: E402
from prism_lm.config import RunConfig, TrainConfig, load_train_config  # noqa: E402
from prism_lm.model import PrismLM, generate  # noqa: E402
from prism_lm.train.loop import build_optimizer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--decode-rounds", type=int, default=7)
    parser.add_argument("--loss-paths", action="store_true", help="also time prism-lm's chunked against plain loss")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--anchors", default=None)
    args = parser.parse_args(argv)
    anchors = anchors_dir(args.anchors)
    if anchors is None:
        print("error: reference models not found (pass --anchors DIR)", file=sys.stderr)
        return 2
    dev = torch.device("cpu")
    train_cfg = load_train_config("prism-50m-tinystories", [f"model.block_size={args.seq_len}"])
    cfg = train_cfg.model
    torch.manual_seed(0)
    ours = PrismLM(cfg).train()
    chunk = train_cfg.run.loss_chunk
    ours_opt, _ = build_optimizer(ours, TrainConfig(model=cfg, run=RunConfig(dtype="float32")), dev)
    official = build_reference("official-prism", cfg, anchors).train()
    official.update_prism_lambda(0, 1)
    official_opt = reference_optimizer(official, dev)
    sides = {"official-prism": (lambda x, y: official(x, y)[1], official, official_opt),
             "prism-lm": (lambda x, y: ours(x, y, loss_chunk=chunk).loss, ours, ours_opt),
             "prism-lm plain loss": (lambda x, y: ours(x, y).loss, ours, ours_opt)}

    def one_step(name: str) -> float:
        loss_of, model, opt = sides[name]
        return time_training(loss_of, model.parameters(), opt, cfg.vocab_size, args.batch_size, cfg.block_size,
                             1, 0, dev)

    common = {"device": device_name(dev), "seq_len": cfg.block_size, "batch_size": args.batch_size,
              "dtype": "float32", "prism_lm_loss_chunk": chunk, "threads": torch.get_num_threads()}
    comparisons = [("official-prism", "prism-lm")] + ([("prism-lm plain loss", "prism-lm")] if args.loss_paths else [])
    for baseline, candidate in comparisons:
        out = paired_rounds({baseline: lambda b=baseline: one_step(b), candidate: lambda c=candidate: one_step(c)},
                            rounds=args.rounds, warmup=2)
        for name, times in out["times"].items():
            print(json.dumps({"bench": "train", "impl": name, "step_s": times}), flush=True)
        print(json.dumps({"bench": "train-ratio", **common, **out["ratio"],
                          "median_step_s": {n: statistics.median(t) for n, t in out["times"].items()}}), flush=True)

    ours.eval()
    official.eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, 16))
    decoders = {"official-prism": lambda: official.generate(prompt, args.new_tokens, top_k=1),
                "prism-lm": lambda: generate(ours, prompt, args.new_tokens, temperature=0)}
    with torch.no_grad():
        out = paired_rounds(decoders, rounds=args.decode_rounds, warmup=1)
    print(json.dumps({"bench": "decode-ratio", **common, "new_tokens": args.new_tokens, **out["ratio"],
                      "tokens_per_s": {n: args.new_tokens / statistics.median(t) for n, t in out["times"].items()}}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
