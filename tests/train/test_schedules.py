import math

import pytest

from prism_lm.config import OptimConfig, RunConfig, TrainConfig
from prism_lm.errors import PrismError
from prism_lm.train.schedules import lambda_at, lr_at


def test_warmup_then_cosine_to_min_lr():
    cfg = TrainConfig(optim=OptimConfig(lr=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110))
    assert lr_at(0, cfg) == pytest.approx(1 / 11)
    assert lr_at(9, cfg) == pytest.approx(10 / 11)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.1 + 0.5 * 0.9)
    assert lr_at(110, cfg) == pytest.approx(0.1) and lr_at(10_000, cfg) == 0.1
    values = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert lr_at(35, cfg) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.25)))


def test_lr_decay_follows_max_iters_unless_set():
    """--set run.max_iters=N decays over N (the tiny configs set no lr_decay_iters); an explicit one wins."""
    follows = TrainConfig(optim=OptimConfig(lr=1.0, min_lr=0.1, warmup_iters=0), run=RunConfig(max_iters=100))
    assert lr_at(50, follows) == pytest.approx(0.55) and lr_at(100, follows) == pytest.approx(0.1)
    explicit = TrainConfig(optim=OptimConfig(lr=1.0, min_lr=0.1, warmup_iters=0, lr_decay_iters=200),
                           run=RunConfig(max_iters=100))
    assert lr_at(100, explicit) == pytest.approx(0.55)


def test_shipped_tiny_config_decays_over_a_shortened_run():
    from prism_lm.config import load_train_config

    cfg = load_train_config("tiny-prism-cpu", ["run.max_iters=100"])
    assert lr_at(100, cfg) == pytest.approx(cfg.optim.min_lr)
    assert lr_at(300, load_train_config("tiny-prism-cpu")) == pytest.approx(cfg.optim.min_lr)


def test_lambda_schedule_names_and_learned():
    from prism_lm.config import load_train_config

    with pytest.raises(PrismError, match="model.prism.lambda_schedule must be one of"):
        load_train_config(None, ["model.prism.lambda_schedule=linear"])
    cfg = TrainConfig(run=RunConfig(max_iters=10))
    assert lambda_at(0, cfg) == pytest.approx(0.01) and lambda_at(10, cfg) == pytest.approx(0.1)
    cfg.model.prism.lambda_schedule = "learned"
    assert lambda_at(5, cfg) is None
