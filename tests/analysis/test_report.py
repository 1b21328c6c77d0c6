import contextlib
import io
import json
import math

import pytest

from prism_lm.analysis.report import analyze_run
from prism_lm.cli import main
from prism_lm.errors import PrismError
from prism_lm.train.loop import train
from tests.helpers import prepare_tiny, tiny_train_config


@pytest.fixture(scope="module")
def analysed(trained, tmp_path_factory):
    """The session's trained run analysed once (with a reference line): the written paths, the
    folder, and what the analysis printed on stderr."""
    out, err = tmp_path_factory.mktemp("report") / "rep", io.StringIO()
    with contextlib.redirect_stderr(err):
        paths = analyze_run(trained / "run", trained / "d", out, max_windows=4, references=[("paper", 1.55)])
    return paths, out, err.getvalue()


def test_report_files_and_numbers(trained, analysed):
    paths, folder, _ = analysed
    report = json.loads(paths["json"].read_text())
    assert report["references"] == [{"label": "paper", "value": 1.55}]
    assert report["training"]["iterations"] == 8
    assert len(report["heads"]["heads"]) == 2 * 2 * 2  # layers x streams x heads
    assert len(report["coherence"]["trained"]) == 2 and set(report["coding_rate"]) >= {"init", "step-000008"}
    assert report["probe"]["target"].strip() == "key"  # compact vocabulary: the embedded probe
    for name, rel in report["figures"].items():
        png = folder / rel
        assert png.is_file() and png.with_suffix(".pdf").is_file(), name
    assert (folder / "explore.html").is_file()  # the explorer page, linked from both reports
    assert "(explore.html)" in paths["md"].read_text() and "href='explore.html'" in paths["html"].read_text()
    assert len(report["heads_init"]["heads"]) == len(report["heads"]["heads"])  # the untrained baseline
    over = report["over_training"]
    assert set(over) == set(report["coding_rate"])  # every checkpoint and step 0
    norms = over["init"]["dictionary_norms"]  # orthogonal init: U's C columns orthonormal, so ‖U‖_F² = C per layer
    for layer in range(2):
        total = sum(x * x for s in ("signal", "noise") for x in norms[s][layer])
        assert total == pytest.approx(report["model"]["n_embd"], rel=1e-4)
    assert all(0 < v["sink_first"] <= v["sink_first4"] <= 1 for e in over.values() for v in e["sinks"].values())
    assert "dictionary norms" in paths["md"].read_text()
    assert report["attention_step"]["trained"][0]["grad_random_abs_p95"] > 0
    assert "closest approach" in paths["md"].read_text().lower()
    rungs = report["resonance"]["ladder_rungs"]  # the model's own ladder: its D and base
    assert rungs["1"] == 0.0 and rungs["sqrt10"] == pytest.approx(2 * math.log(10 ** 0.5) * (
        report["resonance"]["head_dim"] // 2) / math.log(report["model"]["rope_base"]))
    assert "m² in ladder rungs" in paths["md"].read_text()
    md, page = paths["md"].read_text(), paths["html"].read_text()
    assert "signal minus noise" in md and "| layer | head | stream |" in md
    assert page.count("data:image/png;base64,") == len(report["figures"]) and "<table>" in page
    with pytest.raises(PrismError, match="non-empty"):
        analyze_run(trained / "run", trained / "d", folder)


def test_gpt_checkpoint_and_cli(trained, tmp_path, capsys):
    gpt = tiny_train_config(trained / "d", tmp_path / "gpt", **{"model.attention": '"gpt"', "run.max_iters": 2,
                                                  "model.block_size": 64})
    train(gpt)
    assert main(["analyze", str(tmp_path / "gpt" / "checkpoints" / "step-000002"), "--data", str(trained / "d"),
                 "--out", str(tmp_path / "g"), "--max-windows", "2",
                 "--probe", "Once upon a time, Lily found a shiny key", "--target", "shiny",
                 "--reference", "paper PRISM=1.55"]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out
    report = json.loads((tmp_path / "g" / "report.json").read_text())
    assert "resonance" not in report and report["heads"]["comparison"] == {}
    assert report["references"] == [{"label": "paper PRISM", "value": 1.55}]
    assert main(["analyze", str(tmp_path / "gpt"), "--data", str(trained / "d"), "--out", str(tmp_path / "i"),
                 "--reference", "1.55"]) == 2
    assert "LABEL=VALUE" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "gpt"), "--data", str(trained / "d"), "--out", str(tmp_path / "h"),
                 "--probe", "She found a door"]) == 2
    assert "outside this model's compact vocabulary" in capsys.readouterr().err


def test_step_zero_model_is_rebuilt_from_the_runs_own_seed(tmp_path):
    """The analysis' untrained baseline is the run's step-0 model: same config, same seed (here 7)."""
    import torch

    import prism_lm
    from prism_lm.analysis.report import _initial_model
    from prism_lm.model import PrismLM
    from prism_lm.run_dir import RunDir

    data = prepare_tiny(tmp_path / "d", stories=40)
    seen = {}
    real_init = PrismLM.__init__

    def spy(self, cfg):  # the loop's first model is the step-0 model
        real_init(self, cfg)
        seen.setdefault("step0", {k: v.clone() for k, v in self.state_dict().items()})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(PrismLM, "__init__", spy)
        train(tiny_train_config(data, tmp_path / "run", **{"run.seed": 7, "run.max_iters": 2}))
    model = prism_lm.load_model(tmp_path / "run")
    rebuilt = _initial_model(RunDir(tmp_path / "run"), model.config).state_dict()
    assert all(torch.equal(rebuilt[k], seen["step0"][k]) for k in rebuilt)
    other_seed = _initial_model(None, model.config).state_dict()  # a bare checkpoint: the default seed
    assert not all(torch.equal(other_seed[k], seen["step0"][k]) for k in other_seed)


@pytest.mark.slow  # 2-5 s; its class keeps a default case beside it
def test_report_says_which_step_and_split_each_headline_number_is_from(tmp_path):
    """One evaluation record at step 0 is 'before any training step', not a final loss; the HTML header is
    readable text, not escaped JSON; the coding-rate figure's layer axis has whole-number ticks."""
    import matplotlib

    matplotlib.use("Agg")
    from prism_lm.analysis import figures

    data = prepare_tiny(tmp_path / "d", stories=40)
    train(tiny_train_config(data, tmp_path / "run", **{"run.max_iters": 2, "run.eval_interval": 100,
                                                   "model.block_size": 64}))
    paths = analyze_run(tmp_path / "run", data, tmp_path / "rep", max_windows=2)
    md, page = paths["md"].read_text(), paths["html"].read_text()
    assert "last evaluation before any training step: val loss" in md and "(val split;" in md
    assert "final val loss" not in md
    assert "checkpoint step 2" in md and "Head statistics (val split, checkpoint step 2;" in md
    assert "&quot;" not in page.split("<h3>")[0] and "checkpoint step 2" in page
    report = json.loads(paths["json"].read_text())
    assert report["training"]["last_eval"]["step"] == 0 and report["checkpoint_step"] == 2

    captured = {}
    real_save = figures._save

    def keep(fig, out, name):
        captured[name] = [t for t in fig.axes[0].get_xticks() if 0 <= t <= 1]
        return real_save(fig, out, name)

    figures._save = keep
    try:
        figures.coding_rates({0: report["coding_rate"]["init"]}, tmp_path / "figs")
    finally:
        figures._save = real_save
    assert captured["coding_rate"] and all(float(t).is_integer() for t in captured["coding_rate"])


def test_report_reads_as_a_researcher_needs(trained, analysed):
    """A summary of numbers beside their baselines, every figure titled and captioned, every table
    introduced by its question, nulls where they exist, and a line per analysis step."""
    from prism_lm.analysis.report_text import FIGURES
    from prism_lm.data.shards import ShardSet, unigram_entropy

    paths, _, err = analysed
    report = json.loads(paths["json"].read_text())
    md = paths["md"].read_text()
    summary = {row["what"].split(":")[0]: row for row in report["summary"]}
    loss_row = next(r for r in report["summary"] if r["what"].startswith("loss on the analysed windows"))
    assert loss_row["baseline"] == pytest.approx(unigram_entropy(ShardSet(trained / "d", report["split"])))
    assert loss_row["value"] == pytest.approx(report["interventions"]["base"]["all"])
    assert len(report["summary"]) == 5 and all(r["reading"] and r["baseline_is"] for r in report["summary"])
    assert "signal − noise" in summary and md.index("## Summary") < md.index("## Figures")
    for key in report["figures"]:
        title, caption = FIGURES[key]  # no figure without words
        assert f"### {title}" in md and caption in md
    assert "heads_antecedent_hit_rate" in report["figures"] and "uniform head's rate here is" in md
    sections = md.split("\n## ")[3:]  # after the summary and the figures: the tables
    assert sections and all(part.split("\n\n")[1].startswith("*") for part in sections)  # each opens with its question
    distance = next(part for part in sections if part.startswith("Recall tokens by antecedent distance"))
    assert distance.split("\n")[0] == "Recall tokens by antecedent distance (tokens): loss"  # no hit-rate promise
    assert "[analyze] head statistics" in err and err.count("[analyze]") >= 12  # start and end of each step


def test_target_grid_fits_its_axis_and_hit_rates_carry_their_nulls(tmp_path, monkeypatch):
    import numpy as np

    from prism_lm.analysis import figures

    captured = {}
    real = figures._save

    def keep(fig, out, name):
        captured[name] = fig
        return real(fig, out, name)

    monkeypatch.setattr(figures, "_save", keep)
    rows = np.array([[0.02, 0.05, 0.01], [0.04, 0.03, 0.08]])
    figures.target_grid(rows, ["a", "b", "c"], 2, "signal", 0, tmp_path)
    heads = [{"layer": 0, "stream": "signal", "antecedent_hit_rate": 0.01, "antecedent_lag_null": 0.02}]
    figures.head_metrics(heads, "antecedent_hit_rate", tmp_path, null=0.0138, null_label="uniform attention")
    axes = captured["target_grid"].axes
    assert axes[0].get_ylim()[1] == pytest.approx(1.15 * 0.08)  # fitted to the tallest bar, not 0..1
    ax = captured["heads_antecedent_hit_rate"].axes[0]
    assert any(list(line.get_ydata()) == [0.0138, 0.0138] for line in ax.get_lines())  # the uniform null
    assert "uniform attention" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("lag-matched null" in t.get_text() for t in ax.get_legend().get_texts())


def _heads(values: dict[str, list[float]], metric: str) -> list[dict]:
    """Synthetic per-head entries: ``values[stream]`` spread over two layers."""
    return [{"layer": i % 2, "head": i // 2, "stream": stream, "mass_beyond_8": 0.5, "selectivity": 0.0,
             "sink_first": v, metric: v} for stream, vs in values.items() for i, v in enumerate(vs)]


def test_summary_readings_are_decided_by_an_interval_over_heads_never_by_a_point_sign():
    from prism_lm.analysis.report_text import summary

    def report(signal, noise, init_signal, init_noise, metric="mass_beyond_8"):
        return {"split": "val", "heads": {"streams": ["signal", "noise"],
                                          "heads": _heads({"signal": signal, "noise": noise}, metric)},
                "heads_init": {"heads": _heads({"signal": init_signal, "noise": init_noise}, metric)}}

    flat = [0.1] * 8
    noisy = report([0.40, 0.41, -0.18, -0.19, 0.40, 0.42, -0.20, -0.18], flat, flat, flat)  # +0.01, spread in layers
    (row,) = [r for r in summary(noisy) if r["what"].startswith("signal − noise")]
    assert row["value"] > 0 and row["reading"].startswith("no difference the heads' interval can see")
    clear = report([0.5, 0.52, 0.49, 0.51], [0.1, 0.12, 0.09, 0.11], flat, flat)
    (row,) = [r for r in summary(clear) if r["what"].startswith("signal − noise")]
    assert row["reading"].startswith("signal heads reach further after training") and row["interval"][0] > 0
    before = report([0.5, 0.52, 0.49, 0.51], [0.1, 0.12, 0.09, 0.11], [0.6, 0.62, 0.59, 0.61], [0.1] * 4)
    (row,) = [r for r in summary(before) if r["what"].startswith("signal − noise")]
    assert row["reading"].startswith("the separation is there before training")
    # selectivity: a tiny positive mean whose interval holds 0 is no selectivity; a clear one is
    tiny = report([0.0003, 0.0004, -0.0002, -0.0001], [0.0] * 4, [0.0] * 4, [0.0] * 4, metric="selectivity")
    (row,) = [r for r in summary(tiny) if "selectivity" in r["what"]]
    assert row["value"] > 0 and row["reading"].startswith("no selectivity the heads' interval can tell from 0")
    sharp = report([0.2, 0.25, 0.22, 0.21], [0.0] * 4, [0.0] * 4, [0.0] * 4, metric="selectivity")
    (row,) = [r for r in summary(sharp) if "selectivity" in r["what"]]
    assert row["reading"].startswith("they find antecedents beyond what distance gives")
    # a sink: the trained heads' first-position mass against the untrained model's, with its interval
    sink = report([0.5, 0.6, 0.55, 0.52], [0.1] * 4, [0.02, 0.03, 0.02, 0.025], [0.1] * 4, metric="selectivity")
    (row,) = [r for r in summary(sink) if "sink" in r["what"]]
    assert row["reading"].startswith("more mass on the first position than the untrained model")


def test_the_loss_the_intervention_and_the_codes_are_read_from_intervals_too():
    """A positive point difference whose interval holds 0 reads as "no difference"; a clear one reads
    as one; the interval is the windows' (loss, intervention) or the layers' (ISTA codes)."""
    import torch

    from prism_lm.analysis.ablation import _paired_support, _support
    from prism_lm.analysis.report_text import summary

    def report(losses, delta, mask, per_layer_trained):
        losses, delta, mask = torch.tensor(losses), torch.tensor(delta), torch.tensor(mask)
        effect = {"recall_delta": float(delta[mask].mean()), "other_delta": float(delta[~mask].mean()),
                  "recall_minus_other": _paired_support(delta, mask)}
        return {"split": "val", "unigram_entropy": 3.0,
                "heads": {"streams": ["signal", "noise"], "heads": []}, "heads_init": {"heads": []},
                "interventions": {"base": {"all": float(losses.mean()), "support": _support(losses, mask | ~mask)},
                                  "effects": {"noise stream off": effect}},
                "sparsity": {"trained": {"mean": sum(per_layer_trained) / 4, "per_layer": per_layer_trained},
                             "initial": {"mean": 0.5, "per_layer": [0.5] * 4}}}

    mask = [[True, False, False], [False, True, False], [True, False, False], [False, False, True]]
    unclear = report([[3.5, 2.0, 2.6], [3.2, 2.2, 3.4], [2.0, 3.4, 3.3], [3.1, 2.7, 2.4]],  # mean 2.90 < 3.0
                     [[0.9, 0.0, 0.1], [-0.5, 0.0, 0.2], [0.4, 0.1, 0.0], [0.0, 0.2, -0.3]],  # recall +0.2, mixed
                     mask, [0.52, 0.47, 0.55, 0.49])  # +0.0075 over layers, mixed
    rows = {r["what"].split(":")[0]: r for r in summary(unclear)}
    assert rows["loss on the analysed windows (nats/token, val split)"]["value"] < 3.0
    assert rows["loss on the analysed windows (nats/token, val split)"]["reading"].startswith("no better than token")
    assert rows["noise stream off"]["value"] > rows["noise stream off"]["baseline"]
    assert rows["noise stream off"]["reading"].startswith("no difference between recall and the rest")
    assert rows["ISTA codes"]["value"] > 0.5 and rows["ISTA codes"]["reading"].startswith("no change")
    clear = report([[1.0, 1.1, 0.9]] * 2 + [[1.2, 1.0, 1.1]] * 2,
                   [[0.9, 0.0, 0.1], [0.1, 0.8, 0.0], [1.0, 0.1, 0.0], [0.0, 0.1, 0.7]],
                   mask, [0.62, 0.64, 0.60, 0.63])
    rows = {r["what"].split(":")[0]: r for r in summary(clear)}
    assert rows["loss on the analysed windows (nats/token, val split)"]["reading"].startswith("the model uses context")
    assert rows["noise stream off"]["reading"].startswith("it matters more for recall")
    assert rows["noise stream off"]["interval"][0] > 0
    assert rows["ISTA codes"]["reading"].startswith("training made the codes sparser")
