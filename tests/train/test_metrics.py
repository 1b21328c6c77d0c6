import json

import torch

from prism_lm.config import ModelConfig
from prism_lm.model import PrismLM
from prism_lm.run_dir import RunDir
from prism_lm.train.metrics import MetricsWriter, flops_per_token, peak_flops


def _by_hand(attention: str, C=512, H=8, L=8, T=512, V=50304, R=2) -> float:
    """Training FLOPs per token at the paper widths, written out from each kind's weight shapes."""
    mlp = 2 * (C * 4 * C) + 2 * (4 * C * C)
    if attention == "prism":  # U: C -> 2HD, used again as W_O = U^T: 2HD -> C; maps of width 2HD
        width = 2 * H * (C // H) * R
        weights, maps = 2 * (C * width) + 2 * (width * C), 2 * T * (width + width)
    elif attention in ("gpt", "gpt-rope"):  # fused QKV C -> 3C, out C -> C; maps of width C
        weights, maps = 2 * (C * 3 * C) + 2 * (C * C), 2 * T * (C + C)
    else:  # diff: q, k, v, out C -> C; 2H maps of width C/2H reading values of width C/H
        weights, maps = 4 * 2 * (C * C), 2 * T * (C + 2 * C)
    return 3.0 * (L * (weights + mlp + maps) + 2 * C * V)


def test_flops_per_token_from_the_shapes_at_the_paper_widths():
    for attention in ("prism", "gpt", "gpt-rope", "diff"):
        cfg = ModelConfig(attention=attention, n_head=4 if attention == "diff" else 8)
        expected = _by_hand(attention, H=cfg.n_head)
        assert flops_per_token(cfg, 512) == expected, attention
    prism, gpt = flops_per_token(ModelConfig(), 512), flops_per_token(ModelConfig(attention="gpt"), 512)
    assert abs(prism / 1e6 - 456.52) < 0.01  # was 406.2 when U counted once (6N), though W_O = U^T runs it twice
    assert abs(gpt / 1e6 - 330.69) < 0.01
    # 6N would miss exactly PRISM's second use of U (6 * 8 layers * 512 * 2048), and nothing for GPT
    with torch.device("meta"):
        n = PrismLM(ModelConfig()).num_params()
    six_n = 6 * n + 6 * 8 * 512 * (2048 + 2048)
    layer_norm_weights = (2 * 8 + 1) * 512  # 6N counts them; they are no matmul
    assert six_n + 6 * 8 * 512 * 2048 - prism == 6 * layer_norm_weights


def test_no_mfu_peak_on_cpu():
    assert peak_flops(torch.device("cpu")) is None


def test_writer_truncates_after_resume_step(tmp_path):
    w = MetricsWriter(RunDir(tmp_path), tensorboard=False)
    for i in range(1, 6):
        w.write({"type": "iter", "iter": i, "train_loss": float(i)})
    w.truncate_after(3)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines] == [1, 2, 3]


def test_truncation_keeps_what_an_uninterrupted_run_had_before_the_resumed_eval(tmp_path, capsys):
    import pytest

    from prism_lm.errors import PrismError
    from prism_lm.run_dir import read_metrics

    w = MetricsWriter(RunDir(tmp_path), tensorboard=False, progress=False)
    for i in range(0, 7):
        if i % 3 == 0:
            w.write({"type": "eval", "iter": i, "val_loss": 1.0})
        if i:
            w.write({"type": "iter", "iter": i, "train_loss": float(i)})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"type": "iter", "it')  # a write cut short
    w.truncate_after(3)  # the resumed loop reruns the evaluation at step 3
    kept = [(r["type"], r["iter"]) for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert kept == [("eval", 0), ("iter", 1), ("iter", 2), ("iter", 3)]
    assert "dropped its partial last line" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('{"type": "iter", "iter": 1}\nnot json\n{"type": "iter", "iter": 2}\n')
    with pytest.raises(PrismError, match="line 2 is not valid JSON"):
        read_metrics(tmp_path / "metrics.jsonl")
