import math

import numpy as np
import pytest

from prism_lm.cli import main
from prism_lm.data.prepare import prepare
from prism_lm.data.shards import ShardSet, unigram_entropy
from prism_lm.demo import run_demo


def test_unigram_entropy_matches_counts(tmp_path):
    prepare(["embedded:20"], tmp_path / "d", val_fraction=0.0, compact_vocab=True, progress=False)
    shards = ShardSet(tmp_path / "d", "train")
    tokens = shards.window(0, len(shards))
    _, counts = np.unique(tokens, return_counts=True)
    p = counts / counts.sum()
    assert unigram_entropy(shards) == pytest.approx(float(-(p * np.log(p)).sum()))
    assert 0 < unigram_entropy(shards) < math.log(shards.vocab_size)


def test_demo_end_to_end_small(tmp_path):
    """The demo's whole pipeline at toy size: both models trained, evaluated, sampled, analysed, reported."""
    logs = []
    result = run_demo(tmp_path / "demo", stories=80, max_iters=3, log=logs.append)
    assert set(result["val_loss"]) == {"PRISM", "GPT"}
    assert all(math.isfinite(v) for v in result["val_loss"].values())
    report = (tmp_path / "demo" / "report.md").read_text()
    for name in ("prism", "gpt"):
        assert (tmp_path / "demo" / name / "report" / "report.html").is_file()
    for row in ("| PRISM | signal | 16 |", "| PRISM | noise | 16 |", "| GPT | main | 16 |"):
        assert row in report
    assert f"unigram entropy {result['unigram_entropy']:.3f}" in report
    assert any("val loss" in line for line in logs) and "spread its mass evenly" in report
    # links relative to the report (they open from any Markdown viewer), and wall time labelled as such
    assert "- PRISM: [prism/report/report.md](prism/report/report.md)" in report and str(tmp_path) not in report
    assert "| wall time here |" in report and "they compare nothing" in report
    # never overwrites an earlier demo
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
