"""The training loop in-process: learning, records, checkpoints, refusals, NaN handling."""

import json

import pytest
import torch

import prism_lm
from prism_lm.errors import DivergedError, PrismError
from prism_lm.run_dir import read_metrics
from prism_lm.train import loop
from prism_lm.train.loop import eval_windows, optimizer_groups, train
from tests.helpers import tiny_train_config


def test_run_learns_and_writes_everything(data, tmp_path, monkeypatch):
    cfg = tiny_train_config(data, tmp_path / "run", **{"run.max_iters": 24, "run.eval_interval": 12,
                                                   "run.checkpoint_interval": 8})
    built = []
    monkeypatch.setattr(loop, "eval_windows", lambda *a, **k: built.append(a[0].split) or eval_windows(*a, **k))
    summary = train(cfg)
    assert built == ["val", "train"]  # three evaluations, each split's windows found once
    assert summary["step"] == 24 and summary["interrupted_by"] is None
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    iters = [r for r in records if r["type"] == "iter"]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["iter"] for r in iters] == list(range(1, 25))
    assert set(iters[0]) == {"type", "iter", "train_loss", "lr", "grad_norm", "prism_lambda", "tokens_per_s", "mfu"}
    assert set(evals[0]) == {"type", "iter", "train_loss", "val_loss", "lr", "prism_lambda"}
    assert [r["iter"] for r in evals] == [0, 12, 24]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    assert iters[0]["mfu"] is None and iters[0]["tokens_per_s"] > 0
    lambdas = [r["prism_lambda"] for r in iters]
    assert lambdas[0] == pytest.approx(0.01, abs=1e-4) and lambdas[-1] == pytest.approx(0.1, abs=1e-3)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["best", "step-000016", "step-000024"]  # keep_checkpoints = 2
    assert (tmp_path / "run" / "config.toml").is_file()
    model = prism_lm.load_model(tmp_path / "run")  # best
    meta = json.loads((tmp_path / "run" / "checkpoints" / "best" / "config.json").read_text())
    assert meta["step"] == 24 and "token_map" in meta["tokenizer"]
    assert model.config.vocab_size % 64 == 0


def test_weight_decay_only_on_matrices():
    model = prism_lm.PrismLM(prism_lm.ModelConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=50, block_size=8,
                                                  bias=True))
    (decay, no_decay), _ = optimizer_groups(model)
    assert "wte.weight" in decay and "blocks.0.attn.u_proj.weight" in decay
    assert "blocks.0.ln_1.weight" in no_decay and "blocks.0.mlp.c_fc.bias" in no_decay
    assert "lm_head.weight" not in decay + no_decay  # tied: optimised once, as wte


def test_refuses_to_start_over_an_existing_run(data, tmp_path):
    train(tiny_train_config(data, tmp_path / "run", **{"run.max_iters": 4}))
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(PrismError, match="already holds a run"):
        train(tiny_train_config(data, tmp_path / "run", **{"run.max_iters": 4}))
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_resume_with_a_different_model_is_refused(data, tmp_path):
    train(tiny_train_config(data, tmp_path / "run", **{"run.max_iters": 4}))
    with pytest.raises(PrismError, match="model.n_embd"):
        train(tiny_train_config(data, tmp_path / "run", **{"run.max_iters": 8, "model.n_embd": 64}), resume="auto")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch):
    real_forward = prism_lm.PrismLM.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None, **options):
        out = real_forward(self, idx, targets, **options)
        if targets is not None and self.training:
            calls["n"] += 1
            if calls["n"] > 2 * 5:  # grad_accum 2: from the 6th step on
                return out._replace(loss=out.loss * float("nan"))
        return out

    monkeypatch.setattr(loop.PrismLM, "forward", poisoned)
    with pytest.raises(DivergedError, match=r"training loss became nan at step 6.*last good checkpoint: .*step-000004"):
        train(tiny_train_config(data, tmp_path / "run"))
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-000004"]
    weights = prism_lm.load_model(tmp_path / "run" / "checkpoints" / "step-000004").state_dict()
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_data_vocab_larger_than_model_is_an_error(data, tmp_path):
    with pytest.raises(PrismError, match="larger than model.vocab_size"):
        train(tiny_train_config(data, tmp_path / "run", **{"model.vocab_size": 64}))


@pytest.mark.parametrize("kind", ["gpt", "diff"])
def test_baselines_train(data, tmp_path, kind):
    summary = train(tiny_train_config(data, tmp_path / kind, **{"model.attention": f'"{kind}"', "run.max_iters": 4}))
    assert summary["step"] == 4
    lambdas = [r["prism_lambda"] for r in read_metrics(tmp_path / kind / "metrics.jsonl") if r["type"] == "iter"]
    assert (lambdas[0] is None) == (kind == "gpt")


def _final_weights(data, out, **sets):
    train(tiny_train_config(data, out, **sets))
    return prism_lm.load_model(out).state_dict()


def test_grad_clip_zero_means_no_clipping(data, tmp_path):
    unclipped = _final_weights(data, tmp_path / "a", **{"optim.grad_clip": 0})
    huge = _final_weights(data, tmp_path / "b", **{"optim.grad_clip": 1e9})
    tight = _final_weights(data, tmp_path / "c", **{"optim.grad_clip": 1e-3})
    assert all(torch.equal(unclipped[k], huge[k]) for k in unclipped)
    assert not all(torch.equal(unclipped[k], tight[k]) for k in unclipped)


def test_lambda_anneal_iters_sets_the_schedule_length(data, tmp_path):
    from prism_lm.train.schedules import lambda_value

    train(tiny_train_config(data, tmp_path / "short", **{"optim.lambda_anneal_iters": 4}))
    train(tiny_train_config(data, tmp_path / "whole", **{"optim.lambda_anneal_iters": 0}))

    def lam(run):  # the record of step s logs λ(s - 1), the value that step trained with
        return {r["iter"]: r["prism_lambda"] for r in read_metrics(run / "metrics.jsonl") if r["type"] == "iter"}

    short, whole = lam(tmp_path / "short"), lam(tmp_path / "whole")
    assert short[5] == pytest.approx(0.1) and short[3] == pytest.approx(lambda_value(2, 4, 0.01, 0.1))
    assert whole[5] == pytest.approx(lambda_value(4, 12, 0.01, 0.1)) and whole[5] < 0.1


def test_a_constant_lambda_schedule_holds_lambda_start(data, tmp_path):
    run = tmp_path / "constant"
    train(tiny_train_config(data, run, **{"model.prism.lambda_schedule": '"constant"',
                                          "model.prism.lambda_start": 0.0}))
    lambdas = {r["prism_lambda"] for r in read_metrics(run / "metrics.jsonl")}
    assert lambdas == {0.0}
    assert prism_lm.load_model(run / "checkpoints" / "step-000012").lambdas() == [0.0, 0.0]


def test_sequential_sampler_trains_and_resumes_exactly(data, tmp_path):
    # λ's schedule length is pinned: by default it is run.max_iters, which the first half changes
    sets = {"data.sampler": '"sequential"', "run.checkpoint_interval": 4, "optim.lambda_anneal_iters": 12}
    train(tiny_train_config(data, tmp_path / "whole", **sets))
    train(tiny_train_config(data, tmp_path / "split", **{**sets, "run.max_iters": 4}))
    train(tiny_train_config(data, tmp_path / "split", **sets), resume="auto")

    def losses(run):
        return [(r["iter"], r["train_loss"]) for r in read_metrics(run / "metrics.jsonl") if r["type"] == "iter"]

    assert losses(tmp_path / "split") == losses(tmp_path / "whole")
    assert len(losses(tmp_path / "whole")) == 12


@pytest.mark.slow
def test_run_compile_trains_like_eager(data, tmp_path):
    """run.compile goes through wrap_model (the whole model under torch.compile) and changes no number."""
    sets = {"model.dropout": 0.0, "run.eval_interval": 100, "run.max_iters": 6}
    train(tiny_train_config(data, tmp_path / "eager", **sets))
    train(tiny_train_config(data, tmp_path / "compiled", **sets, **{"run.compile": "true"}))

    def losses(run):
        return [r["train_loss"] for r in read_metrics(run / "metrics.jsonl") if r["type"] == "iter"]

    torch.testing.assert_close(torch.tensor(losses(tmp_path / "compiled")), torch.tensor(losses(tmp_path / "eager")),
                               rtol=1e-4, atol=1e-4)


def test_a_run_that_is_all_warm_up_says_so_in_one_line(data, tmp_path, capsys):
    train(tiny_train_config(data, tmp_path / "run", **{"run.max_iters": 2, "optim.warmup_iters": 2,
                                                      "run.eval_interval": 2}))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warm-up" in line]
    assert warnings == ["warning: optim.warmup_iters = 2 >= run.max_iters = 2: the whole run is learning-rate warm-up "
                        "(the rate never reaches optim.lr); lower optim.warmup_iters for a real run"]
    train(tiny_train_config(data, tmp_path / "ok", **{"run.max_iters": 3, "optim.warmup_iters": 2,
                                                     "run.eval_interval": 3}))
    assert "warm-up" not in capsys.readouterr().err
