"""The speed suite of issue 6: paper-config training and decoding, every variant in one run. JSON lines.

    python benchmarks/speed.py gpu          # H100/H200: train (compiled, chunked loss and not) + decode
    python benchmarks/speed.py cpu          # this laptop-class CPU: small shapes, decode cache vs no cache

Each line is one measurement from ``prism_lm.bench``; copy them into benchmarks/RESULTS.md with the
device, date, commit and this command.
"""

import argparse
import json
import subprocess
import sys

GPU = [
    # training at the paper shape: batch 32, T 512, bf16, compiled; full logits vs chunked head
    ["train", "--batch-size", "32", "--steps", "20", "--warmup", "5", "--compile", "--path", "fast",
     "--loss-chunk", "0", "2048", "8192"],
    ["train", "--batch-size", "32", "--steps", "10", "--warmup", "2", "--path", "eager", "--attention", "prism",
     "--loss-chunk", "2048"],
    ["decode", "--batch-size", "1", "8", "32", "--cache", "dynamic", "compiled"],
    ["decode", "--batch-size", "1", "--cache", "none", "--attention", "prism"],
]
CPU = [
    ["train", "--batch-size", "4", "--steps", "3", "--warmup", "1", "--set", "model.block_size=256",
     "--loss-chunk", "0", "1024"],
    ["decode", "--batch-size", "1", "--cache", "dynamic", "none"],
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("suite", choices=["gpu", "cpu"])
    parser.add_argument("--config", default="prism-50m-tinystories")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(json.dumps({"suite": args.suite, "config": args.config, "commit": commit or None}), flush=True)
    for argv in GPU if args.suite == "gpu" else CPU:
        cmd = [sys.executable, "-m", "prism_lm.cli", "bench", argv[0], args.config, *argv[1:]]
        if subprocess.run(cmd).returncode:
            raise SystemExit(f"failed: {' '.join(cmd)}")


if __name__ == "__main__":
    main()
