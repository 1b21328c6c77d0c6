"""[ladder]: the same arms at several scales, and whether the gap closes with tokens."""

import json

import numpy as np
import pytest
from scipy import stats

from prism_lm.errors import PrismError
from prism_lm.experiments.ladder import summarise_ladder
from prism_lm.experiments.report import write_report
from prism_lm.experiments.runner import run_sweep
from prism_lm.experiments.spec import load_experiments
from tests.helpers import write_experiment

LADDER = """
[ladder]
points = [{ "run.max_iters" = 4 }, { "run.max_iters" = 8 }]
arm = "prism"
baseline = "gpt"
metric = "val_loss_32"
"""


def _ladder_file(tmp_path, ladder: str = LADDER):
    """The two-arm file with a ladder instead of its verdict (whose arm names carry no point)."""
    path = write_experiment(tmp_path)
    text = path.read_text()
    path.write_text(text[:text.index("[[verdicts]]")] + ladder)
    return path


def _by_group(gaps: dict[int, float], seeds=range(5), noise=0.0, rng=None):
    """Groups of a two-arm ladder over max_iters: arm − baseline is gaps[steps] (plus noise) per seed."""
    out = {}
    for steps, gap in gaps.items():
        base = {s: 1.0 + 0.01 * s for s in seeds}
        arm = {s: base[s] + gap + (rng.normal(0, noise) if rng is not None else 0.0) for s in seeds}
        tokens = {s: steps * 1000.0 for s in seeds}
        out[f"prism/max_iters={steps}"] = {"m": arm, "tokens_seen": tokens, "parameters": {s: 5.0 for s in seeds}}
        out[f"gpt/max_iters={steps}"] = {"m": base, "tokens_seen": tokens, "parameters": {s: 5.0 for s in seeds}}
    return out


def _exp(steps):
    return {"ladder": {"points": [{"run.max_iters": s} for s in steps], "arm": "prism", "baseline": "gpt",
                       "metric": "m", "claim": "c"}}


def test_a_gap_that_shrinks_with_tokens_closes_and_one_that_widens_grows():
    rng = np.random.default_rng(0)
    closing = summarise_ladder(_exp([200, 800, 3200]), _by_group({200: 0.3, 800: 0.2, 3200: 0.1}, noise=0.01, rng=rng))
    assert closing["verdict"] == "the gap closes with tokens"
    # 0.1 nats less per factor 4 = per 0.602 decades: slope -0.166 per decade
    assert closing["slope_vs_log10_tokens"]["slope"] == pytest.approx(-0.1 / np.log10(4), abs=0.02)
    growing = summarise_ladder(_exp([200, 800, 3200]),
                               _by_group({200: -0.1, 800: -0.2, 3200: -0.3}, noise=0.01, rng=rng))
    assert growing["verdict"] == "the gap grows with tokens"  # a negative gap moving away from 0
    flat = summarise_ladder(_exp([200, 800, 3200]), _by_group({200: 0.2, 800: 0.2, 3200: 0.2}, noise=0.05, rng=rng))
    assert flat["verdict"].startswith("inconclusive: the slope per decade of tokens allows")
    assert [p["tokens"] for p in closing["points"]] == [200_000, 800_000, 3_200_000]
    assert closing["points"][0]["difference"]["mean"] == pytest.approx(0.3, abs=0.02)


def test_the_scale_slope_is_fitted_within_each_seed_and_judged_over_seeds():
    """Hand values: each seed's OLS slope against log10 tokens, then the t interval over the seeds
    (df = seeds − 1), not one OLS over every seed-level point (which counts a seed's points as
    independent draws)."""
    rng = np.random.default_rng(3)
    by_group = _by_group({200: 0.3, 800: 0.2, 3200: 0.1}, noise=0.05, rng=rng)
    fit = summarise_ladder(_exp([200, 800, 3200]), by_group)["slope_vs_log10_tokens"]
    x = np.log10([200_000, 800_000, 3_200_000])
    hand = []
    for seed in range(5):
        y = [by_group[f"prism/max_iters={k}"]["m"][seed] - by_group[f"gpt/max_iters={k}"]["m"][seed]
             for k in (200, 800, 3200)]
        hand.append(np.polyfit(x, y, 1)[0])
    half = stats.t.ppf(0.975, 4) * np.std(hand, ddof=1) / np.sqrt(5)
    assert fit["n"] == 5 and fit["slope"] == pytest.approx(np.mean(hand))
    assert fit["ci95"] == pytest.approx([np.mean(hand) - half, np.mean(hand) + half])


def test_the_ladder_reports_the_last_gap_and_the_tokens_the_arm_needs_to_match():
    """The arm's mean loss falls 0.1 per factor 4 of tokens; the baseline ends 0.1 lower, so the arm
    needs one more factor 4 (extrapolated), or sits between two points (interpolated)."""
    closing = summarise_ladder(_exp([200, 800, 3200]), _by_group({200: 0.3, 800: 0.2, 3200: 0.1}))
    match = closing["tokens_to_match"]
    # the arm's mean: 1.02 + gap per point (the baseline's mean is 1.02 at every point)
    assert match["how"] == "extrapolated along the last two points" and match["times_last_point"] == pytest.approx(4.0)
    assert match["tokens"] == pytest.approx(12_800_000) and match["baseline_level"] == pytest.approx(1.02)
    assert closing["last_point_difference"]["mean"] == pytest.approx(0.1)
    by_group = _by_group({200: 0.3, 800: -0.1, 3200: -0.3})  # crosses the baseline between 200 and 800
    crossing = summarise_ladder(_exp([200, 800, 3200]), by_group)["tokens_to_match"]
    assert crossing["how"] == "interpolated between ladder points"
    assert crossing["tokens"] == pytest.approx(10 ** (np.log10(200_000) + 0.75 * np.log10(4)))
    away = summarise_ladder(_exp([200, 800, 3200]), _by_group({200: 0.1, 800: 0.2, 3200: 0.3}))["tokens_to_match"]
    assert away["tokens"] is None and away["how"].startswith("not reached")


def test_points_that_do_not_differ_in_tokens_give_no_slope():
    by_group = _by_group({200: 0.3})
    by_group["prism/n_embd=64"] = by_group["prism/max_iters=200"]
    by_group["gpt/n_embd=64"] = by_group["gpt/max_iters=200"]
    exp = {"ladder": {"points": [{"run.max_iters": 200}, {"model.n_embd": 64}], "arm": "prism", "baseline": "gpt",
                      "metric": "m", "claim": "c"}}
    assert summarise_ladder(exp, by_group)["verdict"].startswith("no verdict")


@pytest.mark.parametrize("ladder, message", [
    (LADDER.replace('"run.max_iters" = 8', '"run.max_itres" = 8'), "max_itres"),  # an unknown config key
    (LADDER.replace('baseline = "gpt"', 'baseline = "gtp"'), "unknown arm 'gtp'"),
    (LADDER.replace("points = [{ \"run.max_iters\" = 4 }, { \"run.max_iters\" = 8 }]",
                    "points = [{ \"run.max_iters\" = 4 }]"), "two points or more"),
    (LADDER.replace('metric = "val_loss_32"', 'metric = "val_loss_99"'), "ladder.metric"),
    (LADDER + "steps = 3\n", "unknown ladder key"),
    (LADDER.replace('baseline = "gpt"', 'baseline = "prism"'), "both 'prism': the gap would be 0 by construction"),
])
def test_bad_ladders_are_one_line_errors(tmp_path, ladder, message):
    with pytest.raises(PrismError, match=message) as info:
        load_experiments(_ladder_file(tmp_path, ladder))
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_a_ladder_sweep_reports_the_gap_at_each_point_and_its_slope(tmp_path):
    path = _ladder_file(tmp_path)
    (exp,) = load_experiments(path)
    assert {r.group for r in exp.runs} == {"prism/max_iters=4", "prism/max_iters=8", "gpt/max_iters=4",
                                           "gpt/max_iters=8"} and len(exp.runs) == 8
    assert run_sweep(path, tmp_path / "out", workers=2, log=lambda line: None) == 0
    paths = write_report(tmp_path / "out")
    ladder = json.loads(paths["json"].read_text())["experiments"]["two"]["ladder"]
    assert [p["tokens"] for p in ladder["points"]] == [4 * 4 * 32, 8 * 4 * 32]
    assert all(p["difference"]["n"] == 2 for p in ladder["points"]) and ladder["slope_vs_log10_tokens"]["n"] == 2
    assert "Across scale" in paths["md"].read_text() and (tmp_path / "out/report/figures/two_ladder.png").is_file()
