"""Every column a sweep can write reads as words in its report (``experiments.columns``), and the
report's arm tables carry the gates' metrics beside the verdicts' with those words."""

import pytest

from prism_lm.config import TrainConfig
from prism_lm.experiments.columns import column_words
from prism_lm.experiments.job import EvaluateSpec
from prism_lm.experiments.report import _markdown, summarise
from tests.helpers import tiny_model_config


@pytest.mark.parametrize("attention, extra", [
    ("prism", {}), ("prism", {"position_embedding": "none"}), ("gpt-rope", {}), ("diff", {}),
    ("prism", {"mlp": "ista"}), ("crate", {"mlp": "ista"}),
])
def test_every_column_a_sweep_can_write_reads_as_words(attention, extra):
    cfg = TrainConfig(model=tiny_model_config(attention, **extra))
    spec = EvaluateSpec(contexts=[32, 64], head_windows=4, initial=True, head_ablations=True, long_contexts=[2])
    columns = spec.columns(cfg)
    assert len(columns) > 40
    unread = sorted(c for c in columns if column_words(c) == c)
    assert not unread, unread


def test_the_words_follow_the_grammar():
    assert column_words("init_stream_diff_far_focus") == "untrained model: far and focused, first − second stream"
    assert (column_words("signal_off_recall_delta_d1_16")
            == "recall-token loss change with the signal stream silenced (d1_16)")
    assert column_words("noise_sink_first4_rel_bos") == "first-four / uniform, noise heads, windows at bos"
    assert column_words("val_loss_128") == "val loss at context 128 (nats, whole val split)"
    assert column_words("a_column_nobody_writes") == "a_column_nobody_writes"  # unknown: its own name


def test_the_arm_table_shows_the_gates_metrics_and_the_columns_in_words():
    plan = {"experiments": {"e": {
        "description": "", "file": "e.toml", "groups": ["a", "b"], "seeds": list(range(5)), "min_seeds": 5,
        "runs": [{"arm": g, "group": g, "grid": {}, "seed": s, "folder": f"{g}{s}"} for g in "ab" for s in range(5)],
        "verdicts": [{"claim": "c", "metric": "val_loss_32", "arm": "a", "baseline": "b", "better": "lower"}],
        "gates": [{"name": "b answers", "metric": "recall_accuracy", "arm": "b", "above": 0.5}]}}}
    rows = [{"experiment": "e", "arm": g, "group": g, "seed": s, "diverged": False, "val_loss_32": 1.0 + 0.1 * s + off,
             "recall_accuracy": 0.9 - 0.01 * s} for g, off in (("a", 0.0), ("b", 0.2)) for s in range(5)]
    md = _markdown({**summarise(plan, rows, {}), "figures": {}}, rows)
    arms = next(line for line in md.splitlines() if line.startswith("| arm | runs | diverged |"))
    assert arms.startswith("| arm | runs | diverged | val_loss_32 | recall_accuracy |")
    assert "| recall_accuracy | answer accuracy (the answer is the top prediction) |" in md
    assert "| val_loss_32 | val loss at context 32 (nats, whole val split) |" in md
