"""Text sources behind one interface: iterate documents, and fingerprint the input.

A source spec is one of:
- ``embedded`` or ``embedded:N`` (N stories, default 20000) or ``embedded:N:SEED``;
- ``synthetic:TASK:N[:key=value,...]``: N documents of a recall task with its answers annotated
  (``mqar`` or ``induction``, ``data/synthetic.py``), e.g. ``synthetic:mqar:20000:pairs=8,vocab=64``;
- a path to a ``.txt`` file in the ``<|endoftext|>`` layout, a ``.jsonl`` or ``.parquet`` file with a
  ``text`` column, or a ``datasets`` ``save_to_disk`` folder (it has ``dataset_info.json``);
- a directory (every supported file below it, sorted) or a glob;
- a Hugging Face hub name such as ``roneneldan/TinyStories`` (optionally ``name:split``), loaded
  lazily through ``datasets``; offline this is a one-line error that says to pass local files.

Every source yields ``Document(text, dependencies, ends)``; only the embedded corpus and the
synthetic tasks have dependencies.

Bounded memory, whatever the input: files are read as streams (``.txt`` and ``.jsonl`` by line,
``.parquet`` by record batch within its row groups, a ``datasets`` folder batch by batch from its
Arrow files, never as whole columns), and a document longer than ``PIECE_CHARS`` comes in pieces
(``ends = False`` on all but its last). A piece ends where GPT-2's pre-tokenizer starts a new chunk
in any case, before a newline that follows a non-space character, so the pieces' tokens joined
are exactly the whole document's tokens. A single line longer than ``MAX_LINE_BYTES`` is refused.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prism_lm.data.embedded import Dependency, generate_story
from prism_lm.data.synthetic import parse_task
from prism_lm.errors import PrismError
from prism_lm.files import file_digest

SEPARATOR = "<|endoftext|>"
BATCH_ROWS = 256  # rows per record batch read from a .parquet file or a datasets folder
TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")
DEFAULT_EMBEDDED_STORIES = 20000
HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+(:\w+)?")


PIECE_CHARS = 1 << 20  # a longer document is tokenized in pieces of about this size
MAX_LINE_BYTES = 64 << 20  # one line (one .jsonl row) longer than this is refused: it must be held whole


@dataclass(frozen=True)
class Document:
    text: str
    dependencies: tuple[Dependency, ...] = field(default=())
    ends: bool = True  # False: the next Document continues this one (a piece of a long document)


def pieces(text: str, size: int | None = None) -> Iterator[tuple[str, bool]]:
    """``(piece, ends)`` covering ``text``: pieces of at least ``size`` characters (the last shorter),
    each cut before a newline that follows a non-space character, so that tokenizing them one by one
    gives the tokens of the whole (no cut point: one piece)."""
    size = size or PIECE_CHARS
    start = 0
    while len(text) - start > size:
        cut = _cut_at_or_after(text, start + size)
        if cut is None:
            break
        yield text[start:cut], False
        start = cut
    yield text[start:], True


def _cut_at_or_after(text: str, at: int) -> int | None:
    while True:
        cut = text.find("\n", at)
        if cut <= 0:
            return None
        if not text[cut - 1].isspace():
            return cut
        at = cut + 1


def split_txt(text: str | Iterable[str]) -> Iterator[str]:
    """Stories of the TinyStories txt layout: text between lines that are exactly <|endoftext|>.

    ``text`` is a whole text or an iterable of its lines.
    """
    story: list[str] = []
    for piece, ends in txt_pieces(text):
        story.append(piece)
        if ends:
            yield "".join(story)
            story = []


def txt_pieces(text: str | Iterable[str], size: int | None = None) -> Iterator[tuple[str, bool]]:
    """``split_txt``'s stories as ``(piece, ends)`` (see ``pieces``): a story of any length is held
    one piece at a time, so memory stays flat on a file with no separators at all."""
    size = size or PIECE_CHARS
    lines: list[str] = []
    held, started = 0, False  # characters in ``lines``; whether a piece of this story went out

    def flush(last: bool):
        body = "\n".join(lines)
        body = body.rstrip() if last else body
        return body if started else body.lstrip()

    for line in text.split("\n") if isinstance(text, str) else text:
        if line.rstrip("\r") == SEPARATOR:
            body = flush(True)
            if body.strip() or started:
                yield body, True
            lines, held, started = [], 0, False
            continue
        if held >= size and lines and lines[-1] and not lines[-1][-1].isspace():
            body = flush(False)  # the next piece starts with this line's newline
            if body.strip() or started:
                yield body, False
                started = True
                lines, held = [""], 0  # "\n".join([""] + next lines) puts the newline back in front
            # else: leading blank lines only, dropped as strip() would
        lines.append(line)
        held += len(line) + 1
    body = flush(True)
    if body.strip() or started:
        yield body, True


def _lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file (without their newline), read as a stream."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise PrismError(f"cannot read {path}: {exc.strerror}") from None
    offset, has_text, lineno = 0, False, 0
    with f:
        while raw := f.readline(MAX_LINE_BYTES + 1):
            lineno += 1
            if len(raw) > MAX_LINE_BYTES:
                raise PrismError(f"{path}:{lineno} is a line longer than {MAX_LINE_BYTES >> 20} MiB; split it (lines "
                                 "are read whole)")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                at = offset + exc.start
                raise PrismError(f"{path} is not UTF-8 text (undecodable byte at offset {at})") from None
            offset += len(raw)
            has_text = has_text or bool(line.strip())
            yield line[:-1] if line.endswith("\n") else line
    if not has_text:
        raise PrismError(f"{path} is empty")


def _jsonl_texts(path: Path) -> Iterator[str]:
    for lineno, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise PrismError(f"{path}:{lineno} is not valid JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise PrismError(f"{path}:{lineno} has no string 'text' field")
        yield row["text"].strip()


def _parquet_texts(path: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise PrismError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    try:
        file = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)  # read as it goes, not ahead
        if "text" not in file.schema_arrow.names:
            raise KeyError("text")
        batches = file.iter_batches(batch_size=BATCH_ROWS, columns=["text"])  # row group by row group
        for batch in batches:
            yield from ((text or "").strip() for text in batch.column(0).to_pylist())
    except PrismError:
        raise
    except Exception as exc:  # pyarrow raises its own types for missing columns and corrupt files
        raise PrismError(f"{path} is not a parquet file with a 'text' column ({type(exc).__name__})") from None


def _saved_dataset_texts(path: Path) -> Iterator[str]:
    try:
        yield from _saved_dataset_rows(path)
    except PrismError:
        raise
    except Exception as exc:  # datasets and pyarrow raise their own types (ArrowInvalid, JSONDecodeError, ...)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise PrismError(f"{path} is not a readable saved dataset ({type(exc).__name__}{': ' + first if first else ''})"
                         "; save it again with datasets' save_to_disk") from None


def _saved_dataset_rows(path: Path) -> Iterator[str]:
    try:
        import datasets
    except ModuleNotFoundError:
        raise PrismError(f"reading the saved dataset {path} needs datasets: pip install 'prism-lm[hub]'") from None
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        raise PrismError(f"{path} holds splits {sorted(ds)}; pass one split's folder")
    if "text" not in ds.column_names:
        raise PrismError(f"{path} has no 'text' column (columns: {ds.column_names})")
    import pyarrow as pa

    for arrow in ds.cache_files:  # read, not memory-mapped: what was read is not held (ds["text"] holds it all)
        with pa.OSFile(arrow["filename"]) as f:
            for batch in pa.ipc.open_stream(f):
                yield from ((text or "").strip() for text in batch.column("text").to_pylist())


def _file_pieces(path: Path) -> Iterator[tuple[str, bool]]:
    if path.is_dir():
        texts = _saved_dataset_texts(path)
    elif path.suffix == ".txt":
        yield from txt_pieces(_lines(path))
        return
    elif path.suffix == ".jsonl":
        texts = _jsonl_texts(path)
    elif path.suffix == ".parquet":
        texts = _parquet_texts(path)
    else:
        raise PrismError(f"unsupported file type {path} (use .txt, .jsonl, .parquet or a save_to_disk folder)")
    for row, text in enumerate(texts, 1):
        if text:
            _check_size(text, f"{path}, row {row}")
            yield from pieces(text)


def _check_size(text: str, where: str) -> None:
    """One limit for every source type: a text read whole (a parquet cell, a dataset row, a hub row) is
    refused past ``MAX_LINE_BYTES``, as a .txt or .jsonl line is."""
    if len(text) * 4 > MAX_LINE_BYTES and len(text.encode("utf-8")) > MAX_LINE_BYTES:
        raise PrismError(f"{where} is a text longer than {MAX_LINE_BYTES >> 20} MiB; split it (texts are read whole)")


class Source:
    """An iterable of Documents that can be read more than once, with a fingerprint of its input."""

    def __init__(self, spec: str):
        self.spec = spec
        self._kind, self._paths, self._args = _parse(spec)

    def __iter__(self) -> Iterator[Document]:
        if self._kind == "embedded":
            count, seed = self._args
            for i in range(count):
                story = generate_story(i, seed)
                yield Document(story.text, story.dependencies)
        elif self._kind == "synthetic":
            task = self._args
            for i in range(task.count):
                doc = task.document(i)
                yield Document(doc.text, doc.dependencies)
        elif self._kind == "hub":
            for row, text in enumerate(_hub_texts(*self._args), 1):
                if text:
                    _check_size(text, f"{self.spec}, row {row}")
                    yield from (Document(piece, ends=ends) for piece, ends in pieces(text))
        else:
            for path in self._paths:
                yield from (Document(piece, ends=ends) for piece, ends in _file_pieces(path))

    def fingerprint(self) -> dict:
        """What identifies the input: file sizes and sha256, or the generator's arguments."""
        if self._kind == "embedded":
            return {"spec": self.spec, "embedded": {"stories": self._args[0], "seed": self._args[1]}}
        if self._kind == "synthetic":
            task = self._args
            return {"spec": self.spec, "synthetic": {"task": task.name, "documents": task.count, **task.params}}
        if self._kind == "hub":
            return {"spec": self.spec, "hub": list(self._args)}
        return {"spec": self.spec, "files": [_file_fingerprint(p) for p in self._paths]}


def _parse(spec: str):
    if spec == "embedded" or spec.startswith("embedded:"):
        parts = spec.split(":")[1:]
        try:
            count = int(parts[0]) if parts and parts[0] else DEFAULT_EMBEDDED_STORIES
            seed = int(parts[1]) if len(parts) > 1 else 0
        except ValueError:
            raise PrismError(f"embedded source must be embedded[:N[:SEED]], got {spec!r}") from None
        if count < 1 or len(parts) > 2:
            raise PrismError(f"embedded source must be embedded[:N[:SEED]] with N >= 1, got {spec!r}")
        return "embedded", [], (count, seed)
    if spec.startswith("synthetic:"):
        return "synthetic", [], parse_task(spec)
    path = Path(spec)
    if path.is_dir() and not (path / "dataset_info.json").is_file():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        if not files:
            raise PrismError(f"directory {path} holds no .txt, .jsonl or .parquet files")
        return "files", files, ()
    if path.exists():
        return "files", [path], ()
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in globlib.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise PrismError(f"glob {spec!r} matches no files")
        return "files", files, ()
    if HUB_NAME.fullmatch(spec) and not spec.endswith(TEXT_SUFFIXES):
        name, _, split = spec.partition(":")
        return "hub", [], (name, split or "train")
    raise PrismError(f"source not found: {spec} (a path, a glob, 'embedded', 'synthetic:TASK:N', or a hub name like "
                     "owner/name)")


def _hub_texts(name: str, split: str) -> Iterator[str]:
    try:
        import datasets
    except ModuleNotFoundError:
        raise PrismError(
            f"loading {name!r} from the Hugging Face hub needs datasets (pip install 'prism-lm[hub]'); "
            "offline, pass local .txt/.jsonl/.parquet files instead") from None
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # ConnectionError, OfflineModeIsEnabled, FileNotFoundError, ...
        raise PrismError(f"cannot load {name!r} (split {split!r}) from the hub ({type(exc).__name__}); "
                         "offline, pass local .txt/.jsonl/.parquet files instead") from None
    for batch in ds.iter(batch_size=BATCH_ROWS):
        yield from ((text or "").strip() for text in batch["text"])


def _file_fingerprint(path: Path) -> dict:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for p in files:
            digest.update(str(p.relative_to(path)).encode())
            digest.update(file_sha256(p).encode())
        return {"path": str(path), "sha256": digest.hexdigest()}
    if not path.is_file():
        raise PrismError(f"source file not found: {path}")
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def file_sha256(path: Path) -> str:
    return file_digest(path)["sha256"]
