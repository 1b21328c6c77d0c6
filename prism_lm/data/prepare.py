"""``prism data prepare``: text sources -> a prepared directory of token shards (see ``shards.py``).

Design choices:
- Train/val split by document, deterministically: the ``round(f * N)`` documents with the
  smallest sha1 of their text go to val (at least one when f > 0 and N >= 2), so a story lands
  in the same split whatever the order of the inputs.
- Two streaming passes (hash, then tokenize in worker processes), so memory stays flat; a long
  document arrives in pieces (``sources.pieces``), hashed and split as one document, its pieces'
  tokens written one after the other with one EOT at its end: the tokens of the whole.
- The directory is built under a temporary name and renamed: complete or absent. Re-running with
  the same inputs finds an identical manifest and does nothing; a different non-empty output
  directory is never overwritten.
- ``compact_vocab`` renumbers the shards to the GPT-2 ids the corpus uses; the map travels in the
  manifest (and from there into checkpoints) as the tokenizer record.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from prism_lm.data.shards import FORMAT, HEADER_BYTES, SPLITS, ShardSet, read_manifest, write_header
from prism_lm.data.sources import Document, Source, file_sha256
from prism_lm.data.synthetic import ANNOTATION_KINDS
from prism_lm.data.tokenizer import EOT_ID, GPT2_VOCAB, Codec, gpt2_encoding
from prism_lm.errors import PrismError, warn
from prism_lm.files import WriterLock, atomic_directory, clean_temporaries, disk_errors, write_json

CHUNK_DOCS = 256
CHUNK_CHARS = 4 << 20  # a chunk of documents for a worker also closes at this many characters


def tokenize_document(doc: Document) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Tokens (uint16, without EOT) and dependencies as (recall token, antecedent token, kind id)."""
    enc = gpt2_encoding()
    tokens = enc.encode_ordinary(doc.text)
    deps = []
    if doc.dependencies:
        starts, at = [], 0
        for t in tokens:
            starts.append(at)
            at += len(enc.decode_single_token_bytes(t))

        def token_at(char: int) -> int:
            return bisect.bisect_right(starts, len(doc.text[:char].encode("utf-8"))) - 1

        deps = [(token_at(d.recall_start), token_at(d.ante_start), ANNOTATION_KINDS.index(d.kind))
                for d in doc.dependencies]
    return np.asarray(tokens, dtype=np.uint16), deps


def _tokenize_chunk(docs: list[Document]):
    return [(*tokenize_document(d), d.ends) for d in docs]


def _chunks(docs, size, chars: int = CHUNK_CHARS):
    chunk, held = [], 0
    for d in docs:
        chunk.append(d)
        held += len(d.text)
        if len(chunk) == size or held >= chars:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


class _SplitWriter:
    def __init__(self, directory: Path, split: str, shard_tokens: int, final: Path):
        self.directory, self.split, self.shard_tokens, self.final = directory, split, shard_tokens, final
        self.shards: list[dict] = []
        self.tokens = self.documents = 0
        self.annotations: list[tuple[int, int, int]] = []
        self._file = None

    def _open(self) -> None:
        name = f"{self.split}-{len(self.shards):05d}.bin"
        self._file = open(self.directory / name, "wb")
        write_header(self._file, GPT2_VOCAB, 0)
        self.shards.append({"file": name, "tokens": 0, "max_token_id": -1})

    def add(self, tokens: np.ndarray, deps, ends: bool = True) -> None:
        """A document's tokens, or a piece of one (``ends`` False: no EOT yet; the shard may change
        within a document, as the split is one stream)."""
        if not len(tokens) and not ends:
            return
        with _writing(self.final, f"the {self.split} split"):
            if self._file is None or self.shards[-1]["tokens"] >= self.shard_tokens:
                self._close_shard()
                self._open()
            doc = np.append(tokens, np.uint16(EOT_ID)) if ends else tokens
            self._file.write(doc.tobytes())
        base = self.tokens
        self.annotations.extend((base + r, base + a, k) for r, a, k in deps)
        self.shards[-1]["tokens"] += len(doc)
        self.shards[-1]["max_token_id"] = max(self.shards[-1]["max_token_id"], int(doc.max()))
        self.tokens += len(doc)
        self.documents += int(ends)

    def _close_shard(self) -> None:
        if self._file is None:
            return
        self._file.seek(0)
        write_header(self._file, GPT2_VOCAB, self.shards[-1]["tokens"])
        self._file.close()
        self._file = None

    def finish(self) -> dict:
        self._close_shard()
        info = {"tokens": self.tokens, "documents": self.documents, "shards": self.shards}
        if self.annotations:
            name = f"{self.split}-annotations.npy"
            np.save(self.directory / name, np.asarray(self.annotations, dtype=np.int64), allow_pickle=False)
            info["annotations"] = {"file": name, "count": len(self.annotations)}
        return info


def _limited(sources: list[Source], max_docs: int | None):
    """The sources' Documents (pieces included) up to ``max_docs`` whole documents."""
    n = 0
    for source in sources:
        for doc in source:
            if max_docs is not None and n >= max_docs:
                return
            n += int(doc.ends)
            yield doc


def _doc_keys(docs) -> Iterator[int]:
    """One key per whole document: the sha1 of its text, fed piece by piece."""
    digest = hashlib.sha1()
    for doc in docs:
        digest.update(doc.text.encode("utf-8"))
        if doc.ends:
            yield int.from_bytes(digest.digest()[:8], "little")
            digest = hashlib.sha1()



def val_mask(keys: np.ndarray, val_fraction: float) -> np.ndarray:
    """Bool mask of validation documents: the round(f*N) smallest keys (ties broken by index)."""
    n = len(keys)
    n_val = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    mask = np.zeros(n, dtype=bool)
    if n_val:
        mask[np.lexsort((np.arange(n), keys))[:n_val]] = True
    return mask


def prepare(specs: list[str], out_dir: str | Path, val_fraction: float = 0.01, max_docs: int | None = None,
            workers: int | None = None, shard_tokens: int = 100_000_000, compact_vocab: bool = False,
            progress: bool = True) -> tuple[dict, bool]:
    """Tokenize ``specs`` into ``out_dir``: (manifest, written). A no-op (written False) when up to date."""
    out_dir = Path(out_dir)
    if not 0.0 <= val_fraction < 1.0:
        raise PrismError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if max_docs is not None and max_docs < 1:
        raise PrismError(f"--max-docs must be >= 1, got {max_docs}")
    if not specs:
        raise PrismError("no --source given")
    if workers is not None and workers < 1:
        raise PrismError(f"--processes must be >= 1, got {workers}")
    if out_dir.exists() and not out_dir.is_dir():
        raise PrismError(f"--out {out_dir} exists and is a file")
    sources = [Source(s) for s in specs]
    inputs = {"format": FORMAT, "tokenizer": "gpt2", "sources": [s.fingerprint() for s in sources],
              "val_fraction": val_fraction, "max_docs": max_docs, "compact_vocab": compact_vocab}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with WriterLock(out_dir.parent / f".{out_dir.name}.lock", f"data directory {out_dir}"):
        for leftover in clean_temporaries(out_dir.parent, out_dir.name):
            warn(f"removed {leftover.name}, a partial preparation left by an interrupted run")
        return _prepare(sources, inputs, out_dir, val_fraction, max_docs, workers, shard_tokens, compact_vocab,
                        progress)


def _prepare(sources, inputs, out_dir: Path, val_fraction, max_docs, workers, shard_tokens, compact_vocab,
             progress) -> tuple[dict, bool]:
    if (out_dir / "manifest.json").is_file():
        manifest = read_manifest(out_dir)
        if manifest.get("inputs") == inputs:
            for split in SPLITS:
                ShardSet(out_dir, split)  # verifies sizes, hashes and token ids
            return manifest, False
    if out_dir.exists() and any(out_dir.iterdir()):
        raise PrismError(f"refusing to overwrite non-empty {out_dir} (it holds other data); choose a new --out")

    keys = np.fromiter(_doc_keys(_limited(sources, max_docs)), dtype=np.uint64)
    if len(keys) == 0:
        raise PrismError(f"no stories found in {', '.join(s.spec for s in sources)}")
    is_val = val_mask(keys, val_fraction)
    if val_fraction > 0 and not is_val.any():
        warn(f"--val-fraction {val_fraction} of {len(keys)} document(s) leaves the val split empty: "
             "training will report no validation loss")

    with atomic_directory(out_dir) as tmp:
        writers = {s: _SplitWriter(tmp, s, shard_tokens, out_dir) for s in SPLITS}
        workers = workers or min(os.cpu_count() or 1, 8)
        chunks = _chunks(_limited(sources, max_docs), CHUNK_DOCS)
        bar = _progress(len(keys), progress)
        i = 0
        with _pool(workers, len(keys)) as pool:
            results = _bounded_imap(pool, chunks, 2 * workers) if pool else map(_tokenize_chunk, chunks)
            for chunk in results:
                ended = 0
                for tokens, deps, ends in chunk:
                    writers["val" if is_val[i] else "train"].add(tokens, deps, ends)
                    i += int(ends)
                    ended += int(ends)
                bar.update(ended)
        bar.close()
        with _writing(out_dir, "its shards"):
            splits = {s: w.finish() for s, w in writers.items()}
            codec = Codec(_compact(tmp, splits)) if compact_vocab else Codec()
            for info in splits.values():
                for shard in info["shards"]:
                    shard["sha256"] = file_sha256(tmp / shard["file"])
            manifest = {"format": FORMAT, "inputs": inputs, "tokenizer": codec.to_json(),
                        "dtype": "uint16", "header_bytes": HEADER_BYTES,
                        "annotation_kinds": list(ANNOTATION_KINDS), "splits": splits}
            write_json(tmp / "manifest.json", manifest)
    return manifest, True


def _writing(out_dir: Path, what: str):
    """A failed write while preparing: one line naming the data directory; the partial one is removed
    (``atomic_directory``), so nothing is left there."""
    return disk_errors("data directory", out_dir, f"writing {what}; nothing was written there")


def _compact(directory: Path, splits: dict) -> list[int]:
    """Rewrite every shard to compact ids (sorted used GPT-2 ids, EOT included); return the map."""
    shards = [s for info in splits.values() for s in info["shards"]]
    used = {EOT_ID}
    for shard in shards:
        used.update(np.unique(np.fromfile(directory / shard["file"], dtype=np.uint16, offset=HEADER_BYTES)).tolist())
    token_map = np.array(sorted(used), dtype=np.uint16)
    for shard in shards:
        path = directory / shard["file"]
        tokens = np.memmap(path, dtype=np.uint16, mode="r+", offset=HEADER_BYTES)
        if len(tokens):
            tokens[:] = np.searchsorted(token_map, tokens).astype(np.uint16)
            shard["max_token_id"] = int(tokens.max())
        count = len(tokens)
        del tokens
        with open(path, "r+b") as f:
            write_header(f, len(token_map), count)
    return token_map.tolist()


class _NoPool:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _pool(workers: int, n_docs: int):
    if workers <= 1 or n_docs < 4 * CHUNK_DOCS:
        return _NoPool()
    return multiprocessing.get_context("fork").Pool(workers, initializer=_worker_init)


def _worker_init() -> None:
    """A tokenizer worker dies with its parent (no orphans after kill -9) and leaves Ctrl-C to it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def _bounded_imap(pool, chunks, in_flight: int):
    """``pool.imap(_tokenize_chunk, chunks)`` with at most ``in_flight`` chunks queued: Pool.imap reads
    its whole input at once, which would hold every document of the corpus in memory."""
    pending = collections.deque()
    for chunk in chunks:
        pending.append(pool.apply_async(_tokenize_chunk, (chunk,)))
        if len(pending) >= in_flight:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="doc", desc="tokenizing", disable=not enabled, leave=False)


