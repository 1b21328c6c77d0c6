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
