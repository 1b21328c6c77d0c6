"""Interventions' effect on recall tokens against the rest, on synthetic and embedded data."""

import pytest
import torch

from prism_lm.analysis.ablation import default_interventions, intervention_effects
from prism_lm.data.loader import window_starts
from prism_lm.data.prepare import prepare
from prism_lm.data.shards import ShardSet
from prism_lm.model import PrismLM
from prism_lm.model.interventions import intervene
from tests.helpers import tiny_model_config


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("abl")
    prepare(["embedded:40"], root / "d", val_fraction=0.0, compact_vocab=True, progress=False)
    return ShardSet(root / "d", "train")


def test_each_effect_is_the_loss_change_under_its_intervention(shards):
    model = PrismLM(tiny_model_config(vocab_size=shards.vocab_size, block_size=128)).eval()
    model.set_scheduled_lambda(0.5)
    out = intervention_effects(model, shards, max_windows=3, batch_size=2)
    assert set(out["effects"]) == {"signal stream off", "noise stream off"} and out["recall_tokens"] > 0
    # recompute "noise stream off" on all tokens by hand: the mean of both deltas, weighted by counts
    rows = torch.from_numpy(shards.windows(window_starts(shards, 128, 3), 129))  # the windows it reads
    with torch.no_grad():
        base = model(rows[:, :-1], rows[:, 1:], reduction="none").loss
        with intervene(model, zero_streams=["noise"]):
            off = model(rows[:, :-1], rows[:, 1:], reduction="none").loss
    e, n, k = out["effects"]["noise stream off"], out["tokens"], out["recall_tokens"]
    mixed = (e["recall_delta"] * k + e["other_delta"] * (n - k)) / n
    assert mixed == pytest.approx(float((off - base).mean()), abs=1e-5)
    assert set(e["by_kind"]) <= {"object", "name", "pet", "cause"} and e["by_kind"]
    assert out["base"]["recall"] > 0
    # its interval: a t interval over the 3 windows of each window's mean change (by hand)
    per_window = (off - base).mean(dim=1).double()
    half = 4.302653 * float(per_window.std()) / 3 ** 0.5  # t(0.975, 2)
    lo, hi = e["support"]["all"]["ci95"]
    assert (lo, hi) == pytest.approx((float(per_window.mean()) - half, float(per_window.mean()) + half), abs=1e-5)
    assert e["support"]["all"] | {"ci95": None, "delta": None} == {"tokens": 3 * 128, "windows": 3, "ci95": None,
                                                                    "delta": None}
    for group, mean in (("all", e["all_delta"]), ("recall", e["recall_delta"]), ("other", e["other_delta"]),
                        *((f"recall: {k}", v) for k, v in e["by_kind"].items())):
        assert e["support"][group]["delta"] == pytest.approx(mean, abs=1e-6), group  # the same means, one source


def test_recall_effects_by_distance_are_the_deltas_of_the_recalls_in_each_bucket(shards):
    from prism_lm.analysis.ablation import _recall_mask

    model = PrismLM(tiny_model_config(vocab_size=shards.vocab_size, block_size=128)).eval()
    model.set_scheduled_lambda(0.5)
    out = intervention_effects(model, shards, {"noise off": {"zero_streams": ["noise"]}}, max_windows=3)
    by_distance = out["effects"]["noise off"]["by_distance"]
    assert set(by_distance) <= {"1-16", "17-64", ">64"} and len(by_distance) >= 2
    # by hand: each recall's distance from the annotations, bucketed, and its loss change
    starts = window_starts(shards, 128, 3)  # the windows it reads
    rows = torch.from_numpy(shards.windows(starts, 129))
    mask, _kind, distance = _recall_mask(shards, starts, 128)
    assert bool((distance[mask] >= 1).all()) and bool((distance[~mask] == -1).all())
    with torch.no_grad():
        base = model(rows[:, :-1], rows[:, 1:], reduction="none").loss
        with intervene(model, zero_streams=["noise"]):
            delta = model(rows[:, :-1], rows[:, 1:], reduction="none").loss - base
    for name, lo, hi in (("1-16", 1, 16), ("17-64", 17, 64), (">64", 65, 10**9)):
        inside = mask & (distance >= lo) & (distance <= hi)
        assert (name in by_distance) == bool(inside.any())
        if inside.any():
            assert by_distance[name] == pytest.approx(float(delta[inside].mean()), abs=1e-5)


def test_an_intervention_that_changes_nothing_has_no_effect(shards):
    model = PrismLM(tiny_model_config(vocab_size=shards.vocab_size, block_size=128)).eval()
    model.set_scheduled_lambda(0.0)  # λ = 0 already: silencing the noise stream changes nothing
    out = intervention_effects(model, shards, {"noise off": {"zero_streams": ["noise"]}}, max_windows=2)
    assert out["effects"]["noise off"]["recall_delta"] == pytest.approx(0.0, abs=1e-6)
    assert out["effects"]["noise off"]["other_delta"] == pytest.approx(0.0, abs=1e-6)


def test_default_interventions_name_each_kinds_streams():
    diff = PrismLM(tiny_model_config("diff"))
    assert set(default_interventions(diff)) == {"positive stream off", "negative stream off"}
    assert set(default_interventions(PrismLM(tiny_model_config("gpt")))) == {"layer 0 heads off", "layer 1 heads off"}


def test_head_ablation_spread_is_wide_when_one_head_matters_and_zero_when_none_does(shards):
    from prism_lm.analysis.ablation import head_ablation_spread

    model = PrismLM(tiny_model_config(vocab_size=shards.vocab_size, block_size=128)).eval()
    model.set_scheduled_lambda(0.5)
    with torch.no_grad():
        for block in model.blocks:
            U = block.attn.dictionary()  # (S, H, D, C), a view of the weight
            U[0, 1:] = 0.0  # signal: only head 0 does anything
            U[1] = 0.0  # noise: no head does anything
            U[0, 0] *= 3.0
    out = head_ablation_spread(model, shards, max_windows=2)
    assert out["noise"] == {"mean": 0.0, "spread": 0.0}
    H = model.blocks[0].attn.n_head
    deltas = []
    for layer in range(len(model.blocks)):
        effect = intervention_effects(model, shards, {"h0": {"zero_heads": [(layer, "signal", 0)]}}, 2)["effects"]
        deltas += [effect["h0"]["all_delta"]] + [0.0] * (H - 1)
    assert any(abs(d) > 1e-4 for d in deltas)
    assert out["signal"]["spread"] == pytest.approx(float(torch.tensor(deltas).std()), abs=1e-6)
    assert out["signal"]["mean"] == pytest.approx(sum(deltas) / len(deltas), abs=1e-6)


def test_prism_ablate_prints_one_row_per_intervention_from_the_runs_own_data(trained, capsys, tmp_path):
    import json

    from prism_lm.cli import main

    assert main(["ablate", str(trained / "run"), "--max-windows", "4", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert f"on {trained / 'd'}" in out  # the data folder the run recorded
    for name in ("λ = 0 ", "λ = 0.1", "λ = 1 ", "signal off", "noise off"):
        assert f"| {name}" in out, name
    result = json.loads((tmp_path / "a" / "ablate.json").read_text())
    lam0 = next(r for r in result["rows"] if r["intervention"] == "λ = 0")
    noise = next(r for r in result["rows"] if r["intervention"] == "noise off")
    assert lam0["all_delta"] == pytest.approx(noise["all_delta"], abs=1e-5)  # noise off is λ = 0
    assert (tmp_path / "a" / "loss_vs_lambda.png").is_file()
    assert "loss_vs_lambda.png" in (tmp_path / "a" / "ablate.md").read_text()
    assert main(["ablate", str(trained / "run"), "--max-windows", "2", "--out", str(tmp_path / "a")]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
    assert main(["ablate", str(trained / "run"), "--heads", "0.1", "1.noise.0", "--per-layer", "--stream", "noise",
                 "--max-windows", "2", "--json"]) == 0
    rows = {r["intervention"] for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows == {"noise off, layer 0", "noise off, layer 1", "head 0.noise.1 off", "head 1.noise.0 off"}
    # what each change rests on: its tokens and a 95% interval over windows, beside the mean
    noise_support = noise["support"]
    assert noise_support["all"]["tokens"] == result["tokens"] and noise_support["all"]["windows"] == 4
    assert noise_support["recall"]["tokens"] == result["recall_tokens"]
    ci = noise_support["all"]["ci95"]
    assert ci[0] <= noise["all_delta"] <= ci[1]
    recall = noise_support["recall"]  # no interval from one window: said as such, never a made-up one
    assert (recall["ci95"] is None) == (recall["windows"] == 1)
    assert f"({result['recall_tokens']:,})" in out.split("| noise off")[1].split("\n")[0]  # printed in the row
    # rows chosen with --heads replace the defaults: said, not silent
    assert main(["ablate", str(trained / "run"), "--heads", "0.1", "--max-windows", "2"]) == 0
    assert "note: the default rows (each stream off and λ = 0, 0.1 and 1) are left out" in capsys.readouterr().out


def test_prism_ablate_bad_input_is_one_line(trained, capsys):
    from prism_lm.cli import main

    for argv, message in ((["--heads", "x"], "LAYER.HEAD"), (["--heads", "0.9"], "is not a head"),
                          (["--stream", "loud"], "no stream 'loud'"), (["--max-windows", "0"], "--max-windows")):
        assert main(["ablate", str(trained / "run"), *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_ablation_plan_refuses_lambda_for_kinds_without_one():
    from prism_lm.analysis.ablation import ablation_plan
    from prism_lm.errors import PrismError

    gpt = PrismLM(tiny_model_config("gpt"))
    assert set(ablation_plan(gpt)) == {"main off"}
    with pytest.raises(PrismError, match="has no λ"):
        ablation_plan(gpt, lambdas=[0.0])
    assert set(ablation_plan(PrismLM(tiny_model_config("diff")), lambdas=[0.5])) == {"λ = 0.5"}
