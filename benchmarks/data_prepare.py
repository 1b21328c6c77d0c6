"""Tokenizer and shard-preparation throughput on this machine. Prints JSON lines.

    python benchmarks/data_prepare.py [--source '../shared/data/tinystories/*.txt'] [--workers N]
"""

import argparse
import glob
import json
import os
import tempfile
import time

from prism_lm.data.prepare import prepare
from prism_lm.data.sources import Source
from prism_lm.data.tokenizer import gpt2_encoding


def main() -> None:
    parser = argparse.ArgumentParser()
    default_source = os.path.join(os.path.dirname(__file__), "../../shared/data/tinystories/*.txt")
    parser.add_argument("--source", default=default_source)
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not glob.glob(args.source) and not args.source.startswith("embedded"):
        raise SystemExit(f"no input at {args.source}")
    texts = [d.text for d in Source(args.source)]
    enc = gpt2_encoding()
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        n = sum(len(enc.encode_ordinary(t)) for t in texts)
        best = min(best, time.perf_counter() - t0)
    print(json.dumps({"bench": "encode_ordinary", "threads": 1, "documents": len(texts), "tokens": n,
                      "tokens_per_s": round(n / best), "bytes_per_s": round(sum(map(len, texts)) / best)}))
    best = float("inf")
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            manifest, _ = prepare([args.source], os.path.join(tmp, "out"), workers=args.processes, progress=False)
            best = min(best, time.perf_counter() - t0)
    total = sum(s["tokens"] for s in manifest["splits"].values())
    print(json.dumps({"bench": "prepare", "processes": args.processes, "tokens": total,
                      "tokens_per_s": round(total / best), "seconds": round(best, 3)}))


if __name__ == "__main__":
    main()
