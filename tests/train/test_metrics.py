import json

import torch

from prism_lm.config import ModelConfig
from prism_lm.model import ATTENTION_KINDS, PrismLM
from prism_lm.run_dir import RunDir
from prism_lm.train.metrics import MetricsWriter, flops_per_token, peak_flops


def attention_widths(cfg):
    return ATTENTION_KINDS[cfg.attention].flop_widths(cfg)


def test_paper_config_flops_match_the_stated_budget():
    cfg = ModelConfig()
    with torch.device("meta"):
        n = PrismLM(cfg).num_params()
    prism = flops_per_token(cfg, n, 512)
    gpt_cfg = ModelConfig(attention="gpt")
    gpt = flops_per_token(gpt_cfg, n, 512)
    assert abs(prism / 1e6 - 406) < 1.0  # "about 406 MFLOP per token in all"
    attn = lambda c: 6 * c.n_layer * 512 * sum(attention_widths(c))  # noqa: E731
    assert attn(cfg) == 4 * attn(gpt_cfg)  # PRISM's attention is 4x GPT's at the paper config
    assert prism - gpt == attn(cfg) - attn(gpt_cfg)
    diff = ModelConfig(attention="diff", n_head=4)
    assert attention_widths(diff) == (512, 1024)
    assert attention_widths(ModelConfig(noise_stream=False)) == (1024, 1024)


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
    from prism_lm.train.metrics import read_metrics

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
