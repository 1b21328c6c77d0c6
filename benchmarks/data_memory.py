"""Peak memory of ``prepare`` per source type at 1x and 4x the input: flat means streaming.

    python benchmarks/data_memory.py [--copies 8 32] [--kinds txt jsonl parquet datasets long-document]

The input is the shared TinyStories sample repeated ``copies`` times, each story made unique;
``long-document`` is all of it as one document with no separator. Peak RSS is the largest of the
process and its tokenizer workers (``getrusage``), 2 workers. Prints one JSON line per run.
Measured time on this 2-core machine: about 2 minutes for the defaults.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINYSTORIES = ROOT.parent / "shared" / "data" / "tinystories"
KINDS = ("txt", "jsonl", "parquet", "datasets", "long-document")


def tinystories() -> list[str]:
    stories = []
    for f in sorted(TINYSTORIES.glob("*.txt")):
        stories += [s.strip() for s in f.read_text(encoding="utf-8").split("<|endoftext|>") if s.strip()]
    return stories


def corpus(stories: list[str], copies: int):
    for c in range(copies):
        for i, story in enumerate(stories):
            yield f"{story} ({c}-{i})"


def write_source(kind: str, path: Path, stories: list[str], copies: int) -> Path:
    """The corpus as a source of ``kind`` at ``path`` (a suffix is added for files); returns its path."""
    if kind in ("txt", "long-document"):
        sep = "\n" if kind == "long-document" else "\n<|endoftext|>\n"
        target = path.with_suffix(".txt")
        with open(target, "w", encoding="utf-8") as f:
            for text in corpus(stories, copies):
                f.write(text + sep)
        return target
    if kind == "jsonl":
        target = path.with_suffix(".jsonl")
        with open(target, "w", encoding="utf-8") as f:
            for text in corpus(stories, copies):
                f.write(json.dumps({"text": text}) + "\n")
        return target
    import pyarrow as pa

    if kind == "parquet":
        import pyarrow.parquet as pq

        target = path.with_suffix(".parquet")
        with pq.ParquetWriter(target, pa.schema([("text", pa.string())])) as writer:
            for c in range(copies):  # one row group per copy, as a writer of a big file would make them
                writer.write_table(pa.table({"text": list(corpus(stories, c + 1))[c * len(stories):]}))
        return target
    if kind == "datasets":
        import datasets

        features = datasets.Features({"text": datasets.Value("string")})
        ds = datasets.Dataset.from_generator(lambda: ({"text": t} for t in corpus(stories, copies)),
                                             features=features, cache_dir=str(path.parent / f"cache-{path.name}"))
        ds.save_to_disk(str(path))
        return path
    raise ValueError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")


def peak_rss_mib(source: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of ``prepare([source], out)`` in a fresh process."""
    code = ("import resource, sys, time; from prism_lm.data.prepare import prepare; t = time.perf_counter(); "
            "prepare([sys.argv[1]], sys.argv[2], workers=2, progress=False); "
            "print(time.perf_counter() - t, max(resource.getrusage(r).ru_maxrss "
            "for r in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024)")
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code, str(source), str(out)], capture_output=True, text=True,
                          env=env, check=True)
    seconds, peak = map(float, proc.stdout.split()[-2:])
    return peak, seconds


def input_mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs=2, default=[8, 32])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    args = parser.parse_args(argv)
    if not TINYSTORIES.is_dir():
        print(f"no TinyStories sample at {TINYSTORIES}", file=sys.stderr)
        return 2
    stories = tinystories()
    for kind in args.kinds:
        peaks = []
        with tempfile.TemporaryDirectory() as tmp:
            for copies in args.copies:
                source = write_source(kind, Path(tmp) / f"in-{copies}", stories, copies)
                peak, seconds = peak_rss_mib(source, Path(tmp) / f"out-{copies}")
                peaks.append(peak)
                print(json.dumps({"kind": kind, "copies": copies, "input_mib": round(input_mib(source), 1),
                                  "peak_rss_mib": round(peak), "seconds": round(seconds, 1),
                                  "date": time.strftime("%Y-%m-%d")}), flush=True)
        print(json.dumps({"kind": kind, "peak_ratio": round(peaks[1] / peaks[0], 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
