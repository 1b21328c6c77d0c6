"""Preparation under faults: one writer, no leftovers, shards that stay inside their directory, a
streaming pipeline whose memory does not grow with the input, workers that die with their parent."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prism_lm.cli import main
from prism_lm.data.prepare import prepare
from prism_lm.data.shards import ShardSet
from prism_lm.errors import PrismError
from prism_lm.files import WriterLock
from tests.helpers import cli_env

TINYSTORIES = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinystories"


def test_a_second_preparation_into_the_same_directory_is_refused(tmp_path):
    with WriterLock(tmp_path / ".out.lock", f"data directory {tmp_path / 'out'}"):
        with pytest.raises(PrismError, match=r"data directory .*out is in use by pid \d+ on "):
            prepare(["embedded:5"], tmp_path / "out", progress=False)
    prepare(["embedded:5"], tmp_path / "out", progress=False)
    assert not (tmp_path / ".out.lock").exists()


def test_leftovers_of_a_killed_preparation_are_removed(tmp_path, capsys):
    (tmp_path / ".out.tmp-abc123").mkdir()
    (tmp_path / ".out.tmp-abc123" / "train-00000.bin").write_bytes(b"x" * 1000)
    prepare(["embedded:5"], tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert "removed .out.tmp-abc123" in capsys.readouterr().err


@pytest.mark.parametrize("mask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_outputs_follow_the_umask(tmp_path, mask, dir_mode, file_mode):
    from prism_lm.train.loop import train
    from tests.helpers import tiny_train_config

    old = os.umask(mask)
    try:
        prepare(["embedded:30"], tmp_path / "d", progress=False)
        train(tiny_train_config(tmp_path / "d", tmp_path / "run", **{"run.max_iters": 4}))
    finally:
        os.umask(old)
    paths = [tmp_path / "d", *(tmp_path / "d").iterdir(), *(tmp_path / "run" / "checkpoints").rglob("*")]
    for path in paths:
        assert path.stat().st_mode & 0o777 == (dir_mode if path.is_dir() else file_mode), path


def test_manifest_paths_stay_inside_the_directory(tmp_path):
    prepare(["embedded:5"], tmp_path / "d", progress=False)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["file"] = "../../etc/passwd"
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PrismError, match="names a shard outside it: '../../etc/passwd'"):
        ShardSet(tmp_path / "d", "train")


def test_data_verify_and_the_model_vocabulary_check(tmp_path, capsys):
    prepare(["embedded:30"], tmp_path / "d", progress=False, compact_vocab=True)
    assert main(["data", "verify", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    shards = ShardSet(tmp_path / "d", "train")
    assert f"train: 1 shard(s), {len(shards):,} tokens, " in out and f"largest id {shards.max_token_id} < vocab" in out
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["shards"][0]["max_token_id"] == shards.max_token_id
    with pytest.raises(PrismError, match=f"holds token id {shards.max_token_id}, past the model's vocabulary"):
        shards.check_fits(shards.max_token_id)
    shard = tmp_path / "d" / "train-00000.bin"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["data", "verify", str(tmp_path / "d")]) == 2
    assert "does not match the sha256 in its manifest" in capsys.readouterr().err


def _big_corpus(path: Path, copies: int) -> Path:
    """TinyStories text, repeated ``copies`` times with each story made unique."""
    stories = []
    for f in sorted(TINYSTORIES.glob("*.txt")):
        stories += [s for s in f.read_text(encoding="utf-8").split("<|endoftext|>") if s.strip()]
    with open(path, "w", encoding="utf-8") as out:
        for c in range(copies):
            for i, story in enumerate(stories):
                out.write(f"{story.strip()} ({c}-{i})\n<|endoftext|>\n")
    return path


def _peak_rss_mib(source: Path, out: Path) -> tuple[float, float]:
    code = ("import resource, sys, time; from prism_lm.data.prepare import prepare; t = time.perf_counter(); "
            "m, _ = prepare([sys.argv[1]], sys.argv[2], workers=2, progress=False); "
            "n = sum(s['tokens'] for s in m['splits'].values()); "
            "print(n / (time.perf_counter() - t), max(resource.getrusage(r).ru_maxrss "
            "for r in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024)")
    proc = subprocess.run([sys.executable, "-c", code, str(source), str(out)], capture_output=True, text=True,
                          env=cli_env(), check=True)
    tokens_per_s, peak = map(float, proc.stdout.split())
    return peak, tokens_per_s


@pytest.mark.slow
@pytest.mark.skipif(not TINYSTORIES.is_dir(), reason="../shared/data/tinystories not found")
def test_preparation_memory_does_not_grow_with_the_input(tmp_path):
    small = _big_corpus(tmp_path / "small.txt", 8)
    large = _big_corpus(tmp_path / "large.txt", 32)
    assert large.stat().st_size > 3.9 * small.stat().st_size > 15 * 2**20
    peak_small, _ = _peak_rss_mib(small, tmp_path / "a")
    peak_large, _ = _peak_rss_mib(large, tmp_path / "b")
    assert peak_large < 1.3 * peak_small, (peak_small, peak_large)


@pytest.mark.slow
@pytest.mark.skipif(not TINYSTORIES.is_dir(), reason="../shared/data/tinystories not found")
def test_killed_preparation_leaves_no_workers_and_no_tracebacks(tmp_path):
    source = _big_corpus(tmp_path / "in.txt", 16)
    proc = subprocess.Popen([sys.executable, "-m", "prism_lm.cli", "data", "prepare", "--source", str(source),
                             "--out", str(tmp_path / "out"), "--processes", "2"], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    workers = []
    while not workers and time.time() < deadline:
        time.sleep(0.05)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        workers = [int(p) for p in children.read_text().split()] if children.exists() else []
    assert workers, "the preparation never started its workers"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    time.sleep(1.0)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()
             and "State:\tZ" not in Path(f"/proc/{w}/status").read_text()]
    assert alive == [], "orphaned tokenizer workers"
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert main(["data", "prepare", "--source", "embedded:5", "--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out"]  # the killed run's temp dir is gone
