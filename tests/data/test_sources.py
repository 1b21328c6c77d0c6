import json

import pytest

from prism_lm.data.sources import Source, split_txt
from prism_lm.errors import PrismError


def test_txt_layout_strips_and_skips_empty(tmp_path):
    text = "  First story.\nLine two.  \n<|endoftext|>\n\n<|endoftext|>\nSecond.\n<|endoftext|>\nTail without sep\n"
    assert list(split_txt(text)) == ["First story.\nLine two.", "Second.", "Tail without sep"]
    assert list(split_txt("a <|endoftext|> b")) == ["a <|endoftext|> b"]  # only whole lines separate


def test_jsonl_glob_and_directory(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": " one "}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
    (tmp_path / "b.txt").write_text("three\n<|endoftext|>\n")
    assert [d.text for d in Source(str(tmp_path))] == ["one", "two", "three"]
    assert [d.text for d in Source(str(tmp_path / "*.txt"))] == ["three"]
    fp = Source(str(tmp_path / "b.txt")).fingerprint()
    assert fp["files"][0]["bytes"] == len("three\n<|endoftext|>\n")


def test_parquet_when_pyarrow_present(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["x y", " z "]}), tmp_path / "d.parquet")
    assert [d.text for d in Source(str(tmp_path / "d.parquet"))] == ["x y", "z"]


def test_saved_dataset_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["alpha", " beta "], "id": [1, 2]}).save_to_disk(str(tmp_path / "saved"))
    assert [d.text for d in Source(str(tmp_path / "saved"))] == ["alpha", "beta"]
    datasets.Dataset.from_dict({"body": ["x"]}).save_to_disk(str(tmp_path / "notext"))
    with pytest.raises(PrismError, match="no 'text' column"):
        list(Source(str(tmp_path / "notext")))


def test_hub_name_offline_is_a_clear_error():
    pytest.importorskip("datasets")
    with pytest.raises(PrismError, match="cannot load 'roneneldan/TinyStories'.*offline, pass local"):
        list(Source("roneneldan/TinyStories:validation"))


def test_embedded_spec():
    docs = list(Source("embedded:3:7"))
    assert len(docs) == 3 and all(d.dependencies for d in docs)
    assert Source("embedded:3:7").fingerprint()["embedded"] == {"stories": 3, "seed": 7}


@pytest.mark.parametrize("spec,message", [
    ("nope/missing.txt", "source not found"),
    ("./not/there", "source not found"),
    ("missing-*.txt", "matches no files"),
    ("embedded:x", "embedded"),
    ("embedded:0", "N >= 1"),
])
def test_bad_specs(spec, message):
    with pytest.raises(PrismError, match=message):
        list(Source(spec))


def test_bad_files(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(PrismError, match="is empty"):
        list(Source(str(tmp_path / "empty.txt")))
    (tmp_path / "bin.txt").write_bytes(b"ok\xff\xfe")
    with pytest.raises(PrismError, match="not UTF-8 text"):
        list(Source(str(tmp_path / "bin.txt")))
    (tmp_path / "bad.jsonl").write_text('{"text": 1}\n')
    with pytest.raises(PrismError, match="bad.jsonl:1 has no string 'text'"):
        list(Source(str(tmp_path / "bad.jsonl")))
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(PrismError, match="unsupported file type"):
        list(Source(str(tmp_path / "x.csv")))


def test_hub_offline_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ModuleNotFoundError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(PrismError, match="offline, pass local"):
        list(Source("roneneldan/TinyStories"))
