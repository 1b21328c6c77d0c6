"""Issue 15, point 3: prism-lm's PRISM beside the official PRISM on this CPU, in one process, alternating.

    python benchmarks/cpu_side_by_side.py [--rounds 5] [--decode-rounds 3] [--anchors DIR]

Paper widths (8 layers, 8 heads, C 512, vocabulary 50,304) with T 256, batch 4, fp32, no compile.
Training: one warm-up step each, then ``--rounds`` rounds of one prism-lm step and one official
step (same random-token shapes, each side its own AdamW), so a load change on the machine hits
both sides alike. Decoding: batch 1, 16-token prompt, ``--new-tokens`` greedy tokens; prism-lm with
its KV cache, the official ``generate`` (top-k 1) without one. Prints JSON lines: every round, then
the medians and the ratios.
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
from prism_lm.bench import device_name, time_training, timed  # noqa: E402
from prism_lm.config import RunConfig, TrainConfig, load_train_config  # noqa: E402
from prism_lm.model import PrismLM, generate  # noqa: E402
from prism_lm.train.loop import build_optimizer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--decode-rounds", type=int, default=3)
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
    sides = {"prism-lm": (lambda x, y: ours(x, y, loss_chunk=chunk).loss, ours, ours_opt),
             "official-prism": (lambda x, y: official(x, y)[1], official, official_opt)}

    def one_step(name: str, warmup: int = 0) -> float:
        loss_of, model, opt = sides[name]
        return time_training(loss_of, model.parameters(), opt, cfg.vocab_size, args.batch_size, cfg.block_size,
                             1, warmup, dev)

    common = {"device": device_name(dev), "seq_len": cfg.block_size, "batch_size": args.batch_size,
              "dtype": "float32", "prism_lm_loss_chunk": chunk}
    for name in sides:
        one_step(name, warmup=1)
    train = {name: [] for name in sides}
    for r in range(args.rounds):
        for name in sides:
            train[name].append(one_step(name))
            print(json.dumps({"bench": "train", "round": r, "impl": name, "step_s": train[name][-1]}), flush=True)

    ours.eval()
    official.eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, 16))
    decoders = {"prism-lm": lambda: generate(ours, prompt, args.new_tokens, temperature=0),
                "official-prism": lambda: official.generate(prompt, args.new_tokens, top_k=1)}
    decode = {name: [] for name in decoders}
    with torch.no_grad():
        for r in range(args.decode_rounds):
            for name, fn in decoders.items():
                seconds, out = timed(fn, dev)
                decode[name].append(seconds)
                print(json.dumps({"bench": "decode", "round": r, "impl": name, "seconds": seconds,
                                  "new_tokens": out.size(1) - 16}), flush=True)

    med = {k: {name: statistics.median(v) for name, v in d.items()} for k, d in (("train", train), ("decode", decode))}
    print(json.dumps({"bench": "summary", **common, "train_rounds": args.rounds, "decode_rounds": args.decode_rounds,
                      "new_tokens": args.new_tokens,
                      "train_step_s": med["train"], "train_tokens_per_s": {
                          n: args.batch_size * cfg.block_size / s for n, s in med["train"].items()},
                      "train_speedup": med["train"]["official-prism"] / med["train"]["prism-lm"],
                      "decode_tokens_per_s": {n: args.new_tokens / s for n, s in med["decode"].items()},
                      "decode_speedup": med["decode"]["official-prism"] / med["decode"]["prism-lm"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
