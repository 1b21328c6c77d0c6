"""The benchmark scripts run end to end on CPU at tiny sizes, beside the reference models (skipped without them)."""

import json

import pytest

from benchmarks.anchors import anchors_dir, build_reference
from prism_lm.config import ModelConfig
from prism_lm.model import PrismLM

ANCHORS = anchors_dir()
needs_anchors = pytest.mark.skipif(ANCHORS is None, reason="../shared/anchors (reference models) not found")


@needs_anchors
@pytest.mark.parametrize("name, kind", [("official-prism", "prism"), ("nanogpt", "gpt")])
def test_references_get_our_dimensions(name, kind):
    cfg = ModelConfig(attention=kind, n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64)
    reference = build_reference(name, cfg, ANCHORS)
    ours = sum(p.numel() for p in PrismLM(cfg).parameters())
    assert sum(p.numel() for p in reference.parameters()) == ours


@needs_anchors
@pytest.mark.slow
def test_gpu_suite_dry_run_on_cpu(tmp_path, capsys):
    from benchmarks.gpu_suite import main

    assert main([str(tmp_path / "out"), "--device", "cpu", "--tiny", "--no-compile", "--no-pytest", "--only",
                 "train-reference", "train-prism", "decode-batch1", "sdpa-backends"]) == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert not [r for r in records if "error" in r]
    trains = {(r["impl"], r.get("sdpa_backends")) for r in records if r.get("bench") == "train"}
    assert trains == {("official-prism", None), ("nanogpt", None), ("prism-lm", "default"),
                      ("prism-lm", "cudnn-first")}
    decodes = {(r["impl"], r["cache"]) for r in records if r.get("bench") == "decode"}
    assert decodes == {("prism-lm", "compiled"), ("prism-lm", "dynamic"), ("prism-lm", "static"),
                       ("official-prism", "none (official)")}
    assert records[-1]["section"] == "targets" and records[-1]["decode_speedup"] > 0
    assert main([str(tmp_path / "x"), "--device", "cpu", "--only", "nope"]) == 2
    assert "unknown section 'nope'" in capsys.readouterr().err


@needs_anchors
@pytest.mark.slow
def test_gpu_suite_compiled_dry_run_and_cuda_graph_check_on_cpu(tmp_path):
    from benchmarks.gpu_suite import main

    assert main([str(tmp_path / "out"), "--device", "cpu", "--tiny", "--no-pytest", "--only", "train-reference",
                 "cuda-graphs"]) == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert not [r for r in records if "error" in r]
    graphs = next(r for r in records if r.get("bench") == "cuda_graphs")
    assert graphs["graph_breaks"] == 0 and graphs["recompiles_after_warmup"] == 0


@needs_anchors
@pytest.mark.slow
def test_cpu_side_by_side_runs(capsys):
    from benchmarks.cpu_side_by_side import main

    assert main(["--rounds", "1", "--decode-rounds", "1", "--new-tokens", "2", "--seq-len", "16"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["bench"] == "summary" and summary["train_speedup"] > 0 and summary["decode_speedup"] > 0
