"""Bounded-memory reading: long documents in pieces whose tokens are exactly the whole's, parquet
and ``datasets`` folders read batch by batch, an over-long line refused; and (slow) peak memory
flat at 4x the input for every source type."""

import json
from pathlib import Path

import numpy as np
import pytest

from prism_lm.cli import main
from prism_lm.data import sources
from prism_lm.data.prepare import prepare
from prism_lm.data.shards import HEADER_BYTES
from prism_lm.data.sources import Source, pieces, split_txt, txt_pieces
from prism_lm.data.tokenizer import EOT_ID, gpt2_encoding

TINYSTORIES = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinystories"
TRICKY = ("Once upon a time.\nShe said: 'hi'  \n\n\n  \tThe end!\r\nNext line 42\n \nx\ny" * 40
          + "no newline at all " * 200 + "\n" * 5 + "tail")


def _stories() -> str:
    if TINYSTORIES.is_dir():
        return "\n".join(f.read_text(encoding="utf-8") for f in sorted(TINYSTORIES.glob("*.txt")))[:400_000]
    return TRICKY * 20


@pytest.mark.parametrize("text", [TRICKY, "\n\n  lead\nand trail  \n\n", "one line, no cut point " * 100])
@pytest.mark.parametrize("size", [1, 7, 100, 10_000])
def test_pieces_cover_the_text_and_their_tokens_are_the_wholes(text, size):
    enc = gpt2_encoding()
    parts = list(pieces(text, size))
    assert "".join(p for p, _ in parts) == text and [e for _, e in parts] == [False] * (len(parts) - 1) + [True]
    assert sum((enc.encode_ordinary(p) for p, _ in parts), []) == enc.encode_ordinary(text)


def test_pieces_of_real_stories_joined_into_one_document_tokenize_as_the_whole():
    enc = gpt2_encoding()
    text = _stories().replace("<|endoftext|>", "")
    parts = list(pieces(text, 5_000))
    assert len(parts) > 20
    assert np.array_equal(np.concatenate([enc.encode_ordinary(p) for p, _ in parts]), enc.encode_ordinary(text))


@pytest.mark.parametrize("size", [1, 5, 64, 10**9])
def test_txt_pieces_join_to_the_stories_of_the_txt_layout(size):
    text = "\n".join([TRICKY, "<|endoftext|>", "", "  ", "<|endoftext|>", "  short  ", "<|endoftext|>", TRICKY])
    lines = text.split("\n")
    expected, story = [], []  # the layout's rule, written out: text between separator lines, stripped
    for line in [*lines, "<|endoftext|>"]:
        if line == "<|endoftext|>":
            if "\n".join(story).strip():
                expected.append("\n".join(story).strip())
            story = []
        else:
            story.append(line)
    parts = list(txt_pieces(iter(lines), size))
    joined, current = [], ""
    for piece, ends in parts:
        current += piece
        if ends:
            joined.append(current)
            current = ""
    assert joined == expected == list(split_txt(text))
    if size == 1:
        assert len(parts) > 3 * len(expected)  # it did cut


def test_a_long_document_is_prepared_in_pieces_as_one_document(tmp_path, monkeypatch):
    text = _stories().replace("<|endoftext|>", "")
    source = tmp_path / "one.txt"
    source.write_text(f"{text}\n<|endoftext|>\nA second, short story.\n", encoding="utf-8")
    monkeypatch.setattr(sources, "PIECE_CHARS", 3_000)
    assert sum(1 for d in Source(str(source)) if not d.ends) > 20
    manifest, _ = prepare([str(source)], tmp_path / "d", val_fraction=0.0, progress=False)
    assert manifest["splits"]["train"]["documents"] == 2
    tokens = np.fromfile(tmp_path / "d" / "train-00000.bin", dtype=np.uint16, offset=HEADER_BYTES)
    enc = gpt2_encoding()
    expected = [*enc.encode_ordinary(text.strip()), EOT_ID, *enc.encode_ordinary("A second, short story."), EOT_ID]
    assert tokens.tolist() == expected
    monkeypatch.setattr(sources, "PIECE_CHARS", 1 << 20)  # the split of a document does not depend on its pieces
    whole, _ = prepare([str(source)], tmp_path / "w", val_fraction=0.5, progress=False)
    monkeypatch.setattr(sources, "PIECE_CHARS", 3_000)
    cut, _ = prepare([str(source)], tmp_path / "c", val_fraction=0.5, progress=False)
    assert whole["splits"] == cut["splits"]


def test_parquet_is_read_a_batch_at_a_time(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    texts = [f" story {i} " for i in range(1000)]
    pq.write_table(pa.table({"text": texts, "n": list(range(1000))}), tmp_path / "d.parquet", row_group_size=100)
    calls = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(pq, "read_table", None)  # the whole-file read is not used
    assert [d.text for d in Source(str(tmp_path / "d.parquet"))] == [t.strip() for t in texts]
    assert calls == [{"batch_size": sources.BATCH_ROWS, "columns": ["text"]}]
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "bad.parquet")
    assert main(["data", "prepare", "--source", str(tmp_path / "bad.parquet"), "--out", str(tmp_path / "o")]) == 2


def test_a_saved_dataset_is_read_from_its_arrow_files_not_as_a_column(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    texts = [f" story {i} " for i in range(700)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "saved"), max_shard_size="4KB")
    assert len(list((tmp_path / "saved").glob("*.arrow"))) > 1
    monkeypatch.setattr(datasets.Dataset, "__getitem__", None)  # ds["text"] would hold the whole column
    assert [d.text for d in Source(str(tmp_path / "saved"))] == [t.strip() for t in texts]


def test_a_line_longer_than_the_stated_limit_is_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 1000)
    (tmp_path / "long.txt").write_text("short\n" + "x" * 1001 + "\n", encoding="utf-8")
    (tmp_path / "long.jsonl").write_text(json.dumps({"text": "y" * 1001}) + "\n", encoding="utf-8")
    import datasets  # one limit for every source type: a parquet cell and a saved dataset's row too
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["short", "z" * 1001]}), tmp_path / "long.parquet")
    datasets.Dataset.from_dict({"text": ["short", "w" * 1001]}).save_to_disk(str(tmp_path / "long-ds"))
    capsys.readouterr()  # datasets' own progress bar
    for name in ("long.txt", "long.jsonl", "long.parquet", "long-ds"):
        assert main(["data", "prepare", "--source", str(tmp_path / name), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        where = {"long.txt": "long.txt:2", "long.jsonl": "long.jsonl:1", "long.parquet": "long.parquet, row 2",
                 "long-ds": "long-ds, row 2"}[name]
        assert len(err) == 1 and where in err[0], err
        assert "longer than" in err[0] and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- memory (slow)


@pytest.mark.slow
@pytest.mark.skipif(not TINYSTORIES.is_dir(), reason="../shared/data/tinystories not found")
@pytest.mark.parametrize("kind", ["jsonl", "parquet", "datasets", "long-document"])
def test_preparation_memory_is_flat_at_four_times_the_input(tmp_path, kind):
    """``.txt`` has its own such test (test_prepare_reliability); 1.3x allows for the tokenizer's caches."""
    from benchmarks.data_memory import peak_rss_mib, tinystories, write_source

    if kind in ("parquet", "datasets"):
        pytest.importorskip("pyarrow" if kind == "parquet" else "datasets")
    stories = tinystories()
    small = write_source(kind, tmp_path / "small", stories, 4)
    large = write_source(kind, tmp_path / "large", stories, 16)
    peak_small, _ = peak_rss_mib(small, tmp_path / "a")
    peak_large, _ = peak_rss_mib(large, tmp_path / "b")
    assert peak_large < 1.3 * peak_small, (kind, peak_small, peak_large)
