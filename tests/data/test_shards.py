"""Prepared shards: exact counts, deterministic split, idempotence, atomicity, corruption checks."""

import json
from pathlib import Path

import numpy as np
import pytest

from prism_lm.cli import main
from prism_lm.data.prepare import prepare, val_mask
from prism_lm.data.shards import HEADER_BYTES, ShardSet, read_header
from prism_lm.data.sources import file_sha256, split_txt
from prism_lm.data.tokenizer import EOT_ID, encode
from prism_lm.errors import PrismError

TINYSTORIES = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinystories"


def _write_stories(path: Path, stories):
    path.write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories))


def test_counts_are_tokens_plus_one_eot_per_document(tmp_path):
    stories = [f"Story {i}: the cat sat on mat number {i * 7}." for i in range(40)]
    _write_stories(tmp_path / "a.txt", stories)
    manifest, written = prepare([str(tmp_path / "a.txt")], tmp_path / "out", val_fraction=0.1, progress=False)
    assert written
    splits = manifest["splits"]
    assert splits["train"]["documents"] + splits["val"]["documents"] == 40
    assert splits["val"]["documents"] == 4
    assert splits["train"]["tokens"] + splits["val"]["tokens"] == sum(len(encode(s)) + 1 for s in stories)
    train = ShardSet(tmp_path / "out", "train")
    stream = train.window(0, len(train))
    assert int((stream == EOT_ID).sum()) == splits["train"]["documents"] and stream[-1] == EOT_ID


def test_multiple_shards_and_worker_processes_give_the_same_stream(tmp_path):
    one, _ = prepare(["embedded:1100"], tmp_path / "one", val_fraction=0.0, workers=1, progress=False)
    many, _ = prepare(["embedded:1100"], tmp_path / "many", val_fraction=0.0, workers=2, shard_tokens=50_000,
                      progress=False)
    assert len(many["splits"]["train"]["shards"]) > 1
    a, b = ShardSet(tmp_path / "one", "train"), ShardSet(tmp_path / "many", "train")
    assert len(a) == len(b) and np.array_equal(a.window(0, len(a)), b.window(0, len(b)))
    assert np.array_equal(a.annotations(), b.annotations())
    assert many["splits"]["val"]["tokens"] == 0
    # windows crossing shard boundaries, stacked
    boundary = many["splits"]["train"]["shards"][0]["tokens"]
    starts = [0, boundary - 5, boundary + 3]
    rows = b.windows(np.array(starts), 11)
    assert rows.shape == (3, 11) and rows.dtype == np.int64
    assert all(np.array_equal(rows[i], a.window(s, 11)) for i, s in enumerate(starts))


def test_annotations_are_global_token_offsets(tmp_path):
    prepare(["embedded:60"], tmp_path / "d", val_fraction=0.2, progress=False)
    for split in ("train", "val"):
        shards = ShardSet(tmp_path / "d", split)
        notes = shards.annotations()
        assert len(notes) >= 60 * 0.2 * 6 * 0.5
        stream = shards.window(0, len(shards))
        assert np.array_equal(stream[notes[:, 0]], stream[notes[:, 1]])
        assert np.all(notes[:, 0] > notes[:, 1])


def test_split_is_deterministic_and_order_independent():
    keys = np.array([5, 1, 9, 3, 7], dtype=np.uint64)
    assert val_mask(keys, 0.4).tolist() == [False, True, False, True, False]
    assert val_mask(keys[::-1], 0.4).tolist() == [False, True, False, True, False][::-1]
    assert val_mask(keys, 0.01).sum() == 1  # at least one val document when f > 0
    assert val_mask(keys, 0.0).sum() == 0
    assert val_mask(keys[:1], 0.5).sum() == 0  # never the only document


def test_rerun_is_noop_and_other_output_is_never_overwritten(tmp_path):
    _write_stories(tmp_path / "a.txt", ["one story", "two story"])
    prepare([str(tmp_path / "a.txt")], tmp_path / "out", progress=False)
    stamp = (tmp_path / "out" / "train-00000.bin").stat().st_mtime_ns
    _, written = prepare([str(tmp_path / "a.txt")], tmp_path / "out", progress=False)
    assert not written and (tmp_path / "out" / "train-00000.bin").stat().st_mtime_ns == stamp
    _write_stories(tmp_path / "a.txt", ["changed story", "two story"])
    with pytest.raises(PrismError, match="refusing to overwrite"):
        prepare([str(tmp_path / "a.txt")], tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "train-00000.bin").stat().st_mtime_ns == stamp


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    from prism_lm.data import prepare as pipeline

    def boom(docs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_tokenize_chunk", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(["embedded:10"], tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_zero_stories_and_bad_arguments(tmp_path):
    (tmp_path / "e.txt").write_text("<|endoftext|>\n<|endoftext|>\n")
    with pytest.raises(PrismError, match="no stories found"):
        prepare([str(tmp_path / "e.txt")], tmp_path / "out", progress=False)
    with pytest.raises(PrismError, match="val-fraction"):
        prepare(["embedded:3"], tmp_path / "out", val_fraction=1.0, progress=False)
    assert not (tmp_path / "out").exists()


def test_corrupt_shards_are_detected(tmp_path):
    prepare(["embedded:30"], tmp_path / "d", progress=False)
    shard = tmp_path / "d" / "train-00000.bin"
    data = bytearray(shard.read_bytes())
    assert read_header(shard)[1] == (len(data) - HEADER_BYTES) // 2
    shard.write_bytes(data[:-2])
    with pytest.raises(PrismError, match="disagrees with its manifest"):
        ShardSet(tmp_path / "d", "train")
    shard.write_bytes(b"NOTOURS!" + bytes(data[8:]))
    with pytest.raises(PrismError, match="bad header"):
        ShardSet(tmp_path / "d", "train")
    data[HEADER_BYTES:HEADER_BYTES + 2] = np.uint16(60000).tobytes()
    shard.write_bytes(bytes(data))
    with pytest.raises(PrismError, match="does not match the sha256 in its manifest"):
        ShardSet(tmp_path / "d", "train")
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["sha256"] = file_sha256(shard)  # a manifest that agrees
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PrismError, match="token id 60000 >= vocab size 50257"):
        ShardSet(tmp_path / "d", "train").window(0, 10)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    manifest["format"] = "nope"
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PrismError, match="not a prism-lm shard manifest"):
        ShardSet(tmp_path / "d", "train")


def test_cli_prepare_and_inspect(tmp_path, capsys):
    assert main(["data", "prepare", "--source", "embedded:40", "--out", str(tmp_path / "d")]) == 0
    assert "tokens/s" in capsys.readouterr().out
    assert main(["data", "prepare", "--source", "embedded:40", "--out", str(tmp_path / "d")]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["data", "inspect", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "train:" in out and "annotations:" in out and "Once upon a time" in out
    assert main(["data", "inspect", str(tmp_path / "nope")]) == 2
    assert "no manifest.json" in capsys.readouterr().err


@pytest.mark.skipif(not TINYSTORIES.is_dir(), reason="shared TinyStories sample not present")
def test_real_tinystories_token_count(tmp_path):
    files = sorted(TINYSTORIES.glob("*.txt"))
    expected = sum(len(encode(s)) + 1 for f in files for s in split_txt(f.read_text(encoding="utf-8")))
    manifest, _ = prepare([str(TINYSTORIES / "*.txt")], tmp_path / "ts", workers=2, progress=False)
    assert sum(s["tokens"] for s in manifest["splits"].values()) == expected


def test_compact_vocabulary_round_trips_text(tmp_path):
    manifest, _ = prepare(["embedded:50"], tmp_path / "c", val_fraction=0.1, compact_vocab=True, progress=False)
    full, _ = prepare(["embedded:50"], tmp_path / "f", val_fraction=0.1, progress=False)
    tok = manifest["tokenizer"]
    assert 100 < tok["vocab_size"] < 1000 and len(tok["token_map"]) == tok["vocab_size"]
    for split in ("train", "val"):
        c, f = ShardSet(tmp_path / "c", split), ShardSet(tmp_path / "f", split)
        assert len(c) == len(f) and c.vocab_size == tok["vocab_size"]
        stream = c.window(0, len(c))
        assert stream.max() < tok["vocab_size"]
        assert np.array_equal(np.asarray(tok["token_map"])[stream], f.window(0, len(f)))
        assert c.codec().decode(stream[:50]) == f.codec().decode(f.window(0, 50))
        assert np.array_equal(c.annotations(), f.annotations())
    codec = ShardSet(tmp_path / "c", "train").codec()
    assert codec.decode(codec.encode("Once upon a time")) == "Once upon a time"
    assert codec.decode([codec.eot]) == "<|endoftext|>"
    with pytest.raises(PrismError, match="outside this model's compact vocabulary"):
        codec.encode("Photosynthesis quantum")


def test_a_held_out_part_of_train_is_a_disjoint_view(tmp_path):
    from prism_lm.data.prepare import prepare
    from prism_lm.data.shards import training_splits

    prepare(["embedded:300"], tmp_path / "d", val_fraction=0.1, compact_vocab=True, progress=False)
    full = ShardSet(tmp_path / "d", "train")
    train, held = training_splits(tmp_path / "d", 0.2)
    assert len(train) + len(held) == len(full) and abs(len(held) - 0.2 * len(full)) <= 1
    assert np.array_equal(train.window(0, 50), full.window(0, 50))
    assert np.array_equal(held.window(0, 50), full.window(len(train), 50))  # starts where train stops
    with pytest.raises(IndexError):
        train.window(len(train) - 10, 20)  # the training view cannot read into the held-out part
    notes, mine = full.annotations(), held.annotations()
    assert len(mine) and (mine[:, 1] >= 0).all() and (mine[:, 0] < len(held)).all()
    assert np.array_equal(mine + [len(train), len(train), 0], notes[notes[:, 1] >= len(train)])
    assert training_splits(tmp_path / "d")[1].split == "val" and held.split == "train[80%:]"
