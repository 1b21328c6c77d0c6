"""Token shards: the on-disk format of a prepared data directory and its reader.

Layout of a prepared directory (written by ``prism_lm.data.prepare``)::

    manifest.json                 format, tokenizer, inputs, per-split counts and shard sha256
    train-00000.bin ...           header (32 bytes) + uint16 tokens, one EOT after each document
    val-00000.bin ...
    train-annotations.npy         int64 (N, 3): recall position, antecedent position, kind id
                                  (positions in the split's token stream; embedded corpus only)

Design choices:
- Header: magic ``PRISMTOK``, format version (u32), vocab size (u32), token count (u64), 8 bytes
  reserved; little endian. Readers check it and the file size against the manifest.
- A split is read as one token stream over memory-mapped shards (``ShardSet``). Sizes are checked
  every time; each shard's sha256 and largest token id are checked once per process (the first
  ``ShardSet`` that opens it), so a damaged shard or an id past the vocabulary stops a run before
  its first step rather than when a sampled window happens to contain it. ``verify`` (``prism data
  verify``) checks everything afresh.
- Shard paths in a manifest must stay inside its directory.
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from prism_lm.data.synthetic import ANNOTATION_KINDS
from prism_lm.data.tokenizer import Codec
from prism_lm.errors import PrismError
from prism_lm.files import file_digest, read_tagged_json

FORMAT = "prism-lm/shards/1"
MAGIC, VERSION, HEADER_BYTES = b"PRISMTOK", 1, 32
_HEADER = struct.Struct("<8sIIQ8x")
SPLITS = ("train", "val")


def write_header(f, vocab_size: int, count: int) -> None:
    f.write(_HEADER.pack(MAGIC, VERSION, vocab_size, count))


def read_header(path: Path) -> tuple[int, int]:
    """(vocab_size, token_count) of a shard; PrismError if it is not one of ours."""
    with open(path, "rb") as f:
        raw = f.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES:
        raise PrismError(f"shard {path} is truncated (no header)")
    magic, version, vocab, count = _HEADER.unpack(raw)
    if magic != MAGIC or version != VERSION:
        raise PrismError(f"shard {path} has a bad header (magic {magic!r}, version {version})")
    return vocab, count



# --------------------------------------------------------------------------- reading

MANIFEST_KEYS = ("tokenizer", "splits")


def read_manifest(directory: str | Path) -> dict:
    manifest = read_tagged_json(Path(directory) / "manifest.json", FORMAT, "a prism-lm shard manifest",
                                missing=f"{directory} is not a prepared data directory (no manifest.json); "
                                        "run `prism data prepare`")
    missing = [k for k in MANIFEST_KEYS if not isinstance(manifest.get(k), dict)]
    if missing or "vocab_size" not in manifest["tokenizer"]:
        what = missing[0] if missing else "tokenizer.vocab_size"
        raise PrismError(f"{directory}/manifest.json has no {what!r} entry (damaged or hand-edited); prepare the "
                         "data again")
    return manifest


def data_fingerprint(directory: str | Path) -> str:
    """16 hex digits naming a prepared directory's tokens wherever it lives: its tokenizer and splits
    (shard names, counts and sha256), not its path or how it was made."""
    manifest = read_manifest(directory)
    body = {"tokenizer": manifest["tokenizer"], "splits": manifest["splits"]}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def manifest_vocab_size(directory: str | Path) -> int | None:
    """The vocabulary of a prepared directory, or None when ``directory`` holds no manifest."""
    if not (Path(directory) / "manifest.json").is_file():
        return None
    return int(read_manifest(directory)["tokenizer"]["vocab_size"])


_VERIFIED: dict[tuple, int] = {}  # (path, size, mtime) -> largest token id, for shards checked in this process


def _check_shard(path: Path, shard: dict, vocab_size: int, fresh: bool = False) -> int:
    """Check a shard's sha256 and token ids against its manifest entry; returns its largest token id."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED and not fresh:
        return _VERIFIED[key]
    if not isinstance(shard.get("sha256"), str):  # an integrity check refuses, never skips, without its key
        raise PrismError(f"the manifest entry of shard {path} has no sha256: it cannot be checked (prepare the data "
                         "again)")
    if file_digest(path)["sha256"] != shard["sha256"]:
        raise PrismError(f"shard {path} does not match the sha256 in its manifest (damaged or replaced; "
                         "prepare the data again)")
    tokens = np.memmap(path, dtype=np.uint16, mode="r", offset=HEADER_BYTES)
    largest = int(tokens.max()) if len(tokens) else -1
    if largest >= vocab_size:
        raise PrismError(f"token id {largest} >= vocab size {vocab_size} in shard {path}")
    if shard.get("max_token_id") != largest:  # a missing entry refuses too: the check never skips
        raise PrismError(f"shard {path}: largest token id {largest}, manifest says {shard.get('max_token_id')}")
    _VERIFIED[key] = largest
    return largest


def shard_path(directory: Path, name: str) -> Path:
    """``directory / name``, refusing a manifest entry that points outside the directory."""
    path = directory / name
    if not path.resolve().is_relative_to(directory.resolve()):
        raise PrismError(f"manifest of {directory} names a shard outside it: {name!r}")
    return path


class ShardSet:
    """One split of a prepared directory as a single token stream over memory-mapped shards."""

    def __init__(self, directory: str | Path, split: str, fresh: bool = False):
        self.directory = Path(directory)
        self.manifest = read_manifest(directory)
        if split not in self.manifest["splits"]:
            raise PrismError(f"{directory} has no split {split!r}")
        self.split, self.info = split, self.manifest["splits"][split]
        self._answers: np.ndarray | None = None  # answer_mask, computed on first use
        self.vocab_size = int(self.manifest["tokenizer"]["vocab_size"])
        self.arrays, self.names, self.starts = [], [], []
        total, self.max_token_id = 0, -1
        for shard in self.info["shards"]:
            path = shard_path(self.directory, shard["file"])
            if not path.is_file():
                raise PrismError(f"shard {path} listed in the manifest is missing")
            vocab, count = read_header(path)
            size = path.stat().st_size
            if count != shard["tokens"] or vocab != self.vocab_size or size != HEADER_BYTES + 2 * count:
                raise PrismError(f"shard {path} disagrees with its manifest (header says {count} tokens, "
                                 f"manifest {shard['tokens']}, file holds {(size - HEADER_BYTES) // 2})")
            self.max_token_id = max(self.max_token_id, _check_shard(path, shard, self.vocab_size, fresh))
            self.starts.append(total)
            self.arrays.append(np.memmap(path, dtype=np.uint16, mode="r", offset=HEADER_BYTES, shape=(count,)))
            self.names.append(path)
            total += count
        self.total, self.first = total, 0
        if total != self.info["tokens"]:
            raise PrismError(f"{directory}: split {split} shards hold {total} tokens, "
                             f"manifest says {self.info['tokens']}")

    def __len__(self) -> int:
        return self.total

    def split_off(self, fraction: float) -> tuple[ShardSet, ShardSet]:
        """(the first 1 - fraction of this stream, the last fraction): views sharing the shards. The
        second is data the first never shows, for tuning on a held-out part of the training split."""
        if not 0.0 < fraction < 1.0:
            raise PrismError(f"a held-out fraction must be in (0, 1), got {fraction}")
        cut = int(round(self.total * (1.0 - fraction)))
        return self._view(0, cut, f"{self.split}[:{1 - fraction:.0%}]"), \
            self._view(cut, self.total - cut, f"{self.split}[{1 - fraction:.0%}:]")

    def _view(self, first: int, length: int, label: str) -> ShardSet:
        view = copy.copy(self)
        view.first, view.total, view.split = self.first + first, length, label
        view._answers = None  # its own positions
        return view

    def check_fits(self, model_vocab: int) -> None:
        """Refuse a model whose vocabulary does not cover every token id of this split."""
        if self.max_token_id >= model_vocab:
            raise PrismError(f"{self.split} data of {self.directory} holds token id {self.max_token_id}, "
                             f"past the model's vocabulary of {model_vocab}")

    def window(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the split stream as int64, checked against the vocab."""
        if start < 0 or start + length > self.total:
            raise IndexError(f"window [{start}, {start + length}) outside split of {self.total} tokens")
        start += self.first
        out = np.empty(length, dtype=np.int64)
        i = bisect.bisect_right(self.starts, start) - 1
        filled = 0
        while filled < length:
            local = start + filled - self.starts[i]
            take = min(length - filled, len(self.arrays[i]) - local)
            out[filled:filled + take] = self.arrays[i][local:local + take]
            filled += take
            i += 1
        if length and out.max() >= self.vocab_size:
            bad = int(out.max())
            raise PrismError(f"token id {bad} >= vocab size {self.vocab_size} in {self.split} data of {self.directory}")
        return out

    def windows(self, starts, length: int) -> np.ndarray:
        """(len(starts), length) int64: ``window(start, length)`` for each start, stacked."""
        return np.stack([self.window(int(s), length) for s in starts])

    def codec(self) -> Codec:
        return Codec.from_json(self.manifest["tokenizer"])

    def answer_mask(self) -> np.ndarray:
        """bool (len(self),): True at each annotated answer token (``data.loss_on = "answers"`` scores only
        these); computed once per view. Data without annotations has no answers to train on: an error."""
        if self._answers is None:
            notes = self.annotations()
            if not len(notes):
                raise PrismError(f"data.loss_on = 'answers' needs annotated answers, and the {self.split} split of "
                                 f"{self.directory} has none (prepare a synthetic task or the embedded corpus)")
            mask = np.zeros(self.total, dtype=bool)
            mask[notes[:, 0]] = True
            self._answers = mask
        return self._answers

    def annotations(self) -> np.ndarray:
        """int64 (N, 3): recall position, antecedent position, kind id (empty when none)."""
        info = self.info.get("annotations")
        if not info:
            return np.zeros((0, 3), dtype=np.int64)
        path = shard_path(self.directory, info["file"])
        try:
            notes = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:  # a pickled object array is refused, never unpickled
            raise PrismError(f"annotations file {path} is not a plain int64 array ({exc}); prepare the data "
                             "again") from None
        if notes.dtype != np.int64 or notes.ndim != 2 or notes.shape[1] != 3:
            raise PrismError(f"annotations file {path} holds {notes.dtype} {notes.shape}, not int64 (N, 3); "
                             "prepare the data again")
        kinds = len(ANNOTATION_KINDS)
        bad = np.flatnonzero((notes[:, 2] < 0) | (notes[:, 2] >= kinds) | (notes[:, :2] < 0).any(axis=1)
                             | (notes[:, :2] >= self.info["tokens"]).any(axis=1))
        if len(bad):
            raise PrismError(f"annotations file {path}: row {bad[0]} {notes[bad[0]].tolist()} is not (recall, "
                             f"antecedent, kind) with positions in the split's {self.info['tokens']:,} tokens and a "
                             f"kind id below {kinds}; prepare the data again")
        if self.first == 0 and self.total == self.info["tokens"]:
            return notes
        inside = (notes[:, 1] >= self.first) & (notes[:, 0] < self.first + self.total)  # both ends in this view
        return notes[inside] - np.array([self.first, self.first, 0])


def inspect(directory: str | Path, sample_tokens: int = 120) -> str:
    """A human summary of a prepared directory: counts per split, a decoded sample, annotation stats."""
    manifest = read_manifest(directory)
    tok = manifest["tokenizer"]
    compact = " (compact vocabulary)" if "token_map" in tok else ""
    lines = [f"{directory}: {FORMAT}, tokenizer {tok['name']}{compact}, vocab size {tok['vocab_size']}"]
    for split in SPLITS:
        shards = ShardSet(directory, split)
        info = shards.info
        lines.append(f"  {split}: {info['tokens']:,} tokens, {info['documents']:,} documents, "
                     f"{len(info['shards'])} shard(s)")
        notes = shards.annotations()
        if len(notes):
            dist = notes[:, 0] - notes[:, 1]
            pct = np.percentile(dist, [5, 50, 95]).astype(int)
            lines.append(f"    annotations: {len(notes):,} recall tokens, distance min {dist.min()} / p5 {pct[0]} / "
                         f"median {pct[1]} / p95 {pct[2]} / max {dist.max()} tokens")
            for k, kind in enumerate(manifest["annotation_kinds"]):
                n = int((notes[:, 2] == k).sum())
                if n:
                    lines.append(f"      {kind}: {n:,}")
    train = ShardSet(directory, "train")
    if len(train):
        sample = Codec.from_json(manifest["tokenizer"]).decode(train.window(0, min(sample_tokens, len(train))))
        lines.append("  sample (train, first tokens):")
        lines.extend("    " + line for line in sample.splitlines())
    return "\n".join(lines)


def verify(directory: str | Path) -> str:
    """Check every shard of a prepared directory afresh (sizes, sha256, token ids); a summary line per split."""
    lines = []
    for split in read_manifest(directory)["splits"]:
        shards = ShardSet(directory, split, fresh=True)
        notes = shards.annotations()  # its path inside the folder and its contents, like every reader's
        extra = f", {len(notes):,} annotations" if len(notes) else ""
        lines.append(f"{split}: {len(shards.info['shards'])} shard(s), {len(shards):,} tokens{extra}, "
                     f"largest id {shards.max_token_id} < vocab {shards.vocab_size}: ok")
    return "\n".join(lines)


def unigram_entropy(shards: ShardSet) -> float:
    """Entropy (nats/token) of the token frequencies: the loss of the best context-free predictor."""
    counts = np.bincount(shards.window(0, len(shards)), minlength=shards.vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def training_splits(directory: str | Path, holdout: float = 0.0) -> tuple[ShardSet, ShardSet]:
    """(what a run trains on, what it is scored on): train and val, or with ``holdout`` > 0 the
    first and last parts of train (``data.holdout``: tuning runs never see val)."""
    train = ShardSet(directory, "train")
    return train.split_off(holdout) if holdout > 0 else (train, ShardSet(directory, "val"))
