import json

import pytest
import torch

from prism_lm.bench import bench_decode, bench_train, with_attention
from prism_lm.cli import main
from prism_lm.config import resolve_vocab_size
from prism_lm.data.shards import ShardSet
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM
from prism_lm.train.metrics import flops_per_token
from tests.helpers import tiny_model_config


def test_bench_train_record_is_consistent():
    row = bench_train(tiny_model_config(), batch_size=2, steps=2, warmup=1, device="cpu", loss_chunk=16)
    assert row["tokens_per_s"] == pytest.approx(2 * 32 / (row["step_ms"] / 1000))
    assert row["mfu"] is None and row["peak_mem_gib"] is None  # CPU: no bf16 peak, no allocator stats
    assert (row["attention"], row["path"], row["loss_chunk"], row["dtype"]) == ("prism", "fast", 16, "float32")
    assert row["params"] == PrismLM(tiny_model_config()).num_params()
    assert row["flops_per_token"] == flops_per_token(tiny_model_config(), 32) > 0  # printed on every device


def test_bench_decode_counts_tokens_and_rejects_overlong_requests():
    cfg = tiny_model_config(block_size=64)
    row = bench_decode(cfg, batch_size=3, prompt_len=4, new_tokens=20, cache="static", device="cpu")
    assert row["new_tokens"] == 20 and row["cache"] == "static"
    assert row["tokens_per_s"] == pytest.approx(3 * 20 / row["seconds"])
    with pytest.raises(PrismError, match="exceeds block_size"):
        bench_decode(cfg, prompt_len=16, new_tokens=60, device="cpu")
    with pytest.raises(PrismError, match="cache must be one of"):
        bench_decode(cfg, cache="on", device="cpu")


def test_with_attention_keeps_dimensions():
    cfg = with_attention(tiny_model_config(), "diff")
    assert cfg.attention == "diff" and cfg.n_embd == 32 and cfg.vocab_size == 97


def test_bench_resolves_vocabulary_zero_from_the_data_like_training(tmp_path):
    from prism_lm.bench import bench_model_config
    from prism_lm.config import load_train_config
    from tests.helpers import prepare_tiny

    data = prepare_tiny(tmp_path / "d", stories=20)
    cfg = load_train_config("tiny-prism-cpu", [f'data.dir="{data}"'])
    vocab = ShardSet(data, "train").vocab_size
    assert bench_model_config(cfg).vocab_size == resolve_vocab_size(0, vocab) == (vocab + 63) // 64 * 64
    with pytest.raises(PrismError, match="no prepared data was found"):
        bench_model_config(load_train_config("tiny-prism-cpu", [f'data.dir="{tmp_path / "none"}"']))


def test_cli_prints_one_json_line_per_variant(capsys):
    sets = ["--set", "model.n_layer=1", "--set", "model.block_size=32", "--set", "model.vocab_size=384"]
    assert main(["bench", "train", "tiny-prism-cpu", *sets, "--steps", "1", "--warmup", "0",
                 "--batch-size", "2", "--attention", "prism", "gpt", "--path", "fast", "eager",
                 "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["attention"], r["path"]) for r in rows] == [("prism", "fast"), ("prism", "eager"),
                                                          ("gpt", "fast"), ("gpt", "eager")]
    assert main(["bench", "decode", "tiny-prism-cpu", *sets, "--new-tokens", "8", "--attention",
                 "diff", "--batch-size", "1", "2", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["batch_size"], r["cache"]) for r in rows] == [(1, "dynamic"), (1, "none"), (2, "dynamic"), (2, "none")]
    assert main(["bench", "decode", "tiny-prism-cpu", "--set", "model.nope=1"]) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bench_on_cuda_reports_memory_and_mfu():
    cfg = tiny_model_config(n_embd=128, n_head=4, block_size=128, vocab_size=512)
    row = bench_train(cfg, batch_size=4, steps=2, warmup=1, device="cuda")
    assert row["dtype"] == "bfloat16" and row["peak_mem_gib"] > 0
    if torch.cuda.get_device_name().startswith(("NVIDIA H100", "NVIDIA H200", "NVIDIA A100")):
        assert 0 < row["mfu"] < 1
    for cache in ("dynamic", "compiled"):  # compiled: CUDA graphs through mode="reduce-overhead"
        dec = bench_decode(cfg, prompt_len=16, new_tokens=32, cache=cache, device="cuda")
        assert dec["dtype"] == "bfloat16" and dec["new_tokens"] == 32
