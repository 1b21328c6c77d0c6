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

    assert main(["--rounds", "6", "--decode-rounds", "6", "--new-tokens", "2", "--seq-len", "16", "--loss-paths"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    ratios = [r for r in lines if r["bench"] == "train-ratio"]
    assert [(r["baseline"], r["candidate"]) for r in ratios] == [("official-prism", "prism-lm"),
                                                                 ("prism-lm plain loss", "prism-lm")]
    assert all(r["rounds"] == 6 and r["ci95"][0] <= r["median"] <= r["ci95"][1] for r in ratios)
    decode = lines[-1]
    assert decode["bench"] == "decode-ratio" and decode["median"] > 0


def test_paired_timing_sees_a_5_percent_difference_under_10_percent_load_noise():
    """The measurement method of issue 25 on synthetic rounds whose answer is known: a load factor
    that drifts ±15% between rounds (common to both sides of a round), 2% noise of each run's own."""
    import numpy as np

    from benchmarks.paired_timing import ratio_summary

    rng = np.random.default_rng(0)

    def rounds(true_ratio, n=41):
        load = rng.uniform(0.85, 1.15, n)
        a = load * rng.normal(1, 0.02, n)
        b = load * rng.normal(1, 0.02, n) / true_ratio
        return list(a), list(b)

    seen = [ratio_summary(*rounds(1.05))["seen"] for _ in range(200)]
    assert np.mean(seen) > 0.95  # a 5% difference is seen nearly always
    false = [ratio_summary(*rounds(1.0))["seen"] for _ in range(400)]
    assert np.mean(false) < 0.08  # and none is invented where there is none (nominal 5%)
    a, b = rounds(1.05)
    unpaired_spread = np.percentile(a, 90) / np.percentile(a, 10)
    assert unpaired_spread > 1.2  # the load noise alone is 4x the difference: why rounds are paired


def test_median_interval_covers_the_median_at_its_nominal_rate():
    import numpy as np

    from benchmarks.paired_timing import median_interval

    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(2000):
        lo, hi = median_interval(list(rng.lognormal(0.05, 0.1, 25)))
        hits += lo <= np.exp(0.05) <= hi
    assert 0.94 < hits / 2000 < 0.99
    with pytest.raises(ValueError, match="at least 6 rounds"):
        median_interval([1.0, 2.0])


def test_paired_rounds_alternates_in_shuffled_order_and_times_each_side():
    from benchmarks.paired_timing import paired_rounds

    now, calls = [0.0], []

    def side(name, cost):
        def run():
            calls.append(name)
            now[0] += cost
        return run

    out = paired_rounds({"a": side("a", 2.0), "b": side("b", 1.0)}, rounds=9, warmup=1, clock=lambda: now[0])
    assert out["times"] == {"a": [2.0] * 9, "b": [1.0] * 9}
    assert out["ratio"]["median"] == 2.0 and out["ratio"]["ci95"] == [2.0, 2.0] and out["ratio"]["seen"]
    firsts = calls[::2]
    assert 0 < firsts.count("a") < 10  # neither side always goes first


@pytest.mark.slow
def test_cpu_step_profile_runs(capsys):
    from benchmarks.profile_cpu_step import main

    assert main(["--steps", "1", "--seq-len", "16", "--top", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(rows) == 4 and rows[-1]["op"] == "(total)" and sum(r["share"] for r in rows[:-1]) <= 1.0
    assert rows[0]["self_ms_per_step"] >= rows[1]["self_ms_per_step"] > 0


@pytest.mark.slow
def test_cpu_step_variants_run(capsys):
    from benchmarks.cpu_step_variants import main

    assert main(["--rounds", "6", "--seq-len", "16"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [(r["baseline"], r["candidate"]) for r in rows] == [
        ("torch dropout and SDPA", "prism-lm CPU dropout and attention"),
        ("SDPA attention", "cpu_training_attention"), ("torch residual dropout", "16-bit residual dropout"),
        ("plain loss", "chunked loss"), ("for-loop AdamW", "fused AdamW")]
    assert main(["--rounds", "6", "--seq-len", "16", "--only", "SDPA attention"]) == 0
    assert [json.loads(line)["baseline"] for line in capsys.readouterr().out.strip().splitlines()] == ["SDPA attention"]
    assert main(["--only", "nothing"]) == 2


def test_torch_paths_swap_the_cpu_paths_for_one_step_and_restore_them():
    """The benchmark's baseline must really run torch's paths (else its ratio would be 1 by construction)."""
    import torch

    from benchmarks.cpu_step_variants import torch_paths
    from prism_lm.model import dropout
    from prism_lm.model.attention import common as attention

    ours = dropout.dropout, attention.cpu_training_attention
    x = torch.ones(1000)
    with torch_paths(residual=True, attention=True):
        assert dropout.dropout is not ours[0] and attention.cpu_training_attention is not ours[1]
        torch.manual_seed(0)
        theirs = dropout.dropout(x, 0.5)
    assert (dropout.dropout, attention.cpu_training_attention) == ours
    torch.manual_seed(0)
    assert torch.equal(theirs, torch.nn.functional.dropout(x, 0.5))
    torch.manual_seed(0)
    assert not torch.equal(theirs, dropout.dropout(x, 0.5)), "prism-lm's own mask differs from torch's"
