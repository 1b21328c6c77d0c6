"""How ``prism analyze``'s numbers are shown: report.md and the self-contained report.html.

Design choices (what a reader needs first):
- A summary at the top: the five numbers that matter, each beside the baseline it is read against
  and a sentence saying which way it falls (the loss against the unigram entropy, the streams'
  separation against the untrained model's, selectivity against 0, a stream's removal on recall
  against the rest, the sink mass against step 0).
- Every figure has a title in words and a caption on how to read it; every table opens with the
  question it answers. The numbers themselves are all in report.json.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from prism_lm import render
from prism_lm.analysis.heads import uniform_values
from prism_lm.analysis.measures import MEASURES, glossary
from prism_lm.stats import bootstrap_diff

FIGURES = {
    "loss": ("Training and validation loss",
             "Loss per token (nats) against the training step: the thin line is each step's training batch, the "
             "dots the periodic validation estimate; dashed lines are the references given with --reference."),
    "grad_norm_lambda": ("Gradient norm and λ over training",
                         "Left: the gradient's global norm before clipping (and its moving average); spikes mark "
                         "unstable steps. Right: λ, the weight of the subtracted noise stream, as scheduled."),
    "heads_mean_distance": ("How far back each head attends",
                            "One dot per head: the mean distance (tokens) between a query and the keys it attends "
                            "to, by layer and stream. A self-attending head sits at 0, a uniform one near T/3."),
    "heads_mass_within_8": ("How much of each head's attention stays within 8 tokens",
                            "One dot per head: attention mass on lags 0-8 (the own token included; the tables "
                            "split self from local). 1: entirely local; near 8/T: spread evenly."),
    "heads_antecedent_hit_rate": ("How much attention each head puts on the word a recall refers back to",
                                  "Filled dots: each head's mean attention on the antecedent of a recall token; "
                                  "open dots: the same head's lag-matched null (what its distance profile alone "
                                  "gives); dashed line: a uniform head. A head above its own null is selective."),
    "head_maps": ("One head's attention on the probe, each stream side by side",
                  "Rows are queries, columns keys (causal: above the diagonal is masked); colour is the attention "
                  "weight; the red row is the probe's target token."),
    "target_grid": ("Where every head of the first stream looks from the target token",
                    "One panel per head: the attention weight from the target token on each earlier token; the "
                    "y axis is shared and fitted to the largest bar."),
    "resonance": ("RoPE interference between the two streams, for each multiplier m",
                  "Left: the first-order cross-kernel (mean |K_SN| over matched frequency pairs) against m; right: "
                  "the closest approach to an exact resonance (log scale; the floor marks exact). Named m are dots."),
    "coding_rate": ("Coding rate of each attention layer's input, across checkpoints",
                    "Solid: R(Z), the coding rate of the layer's input; dashed: ΔR, the rate reduction between the "
                    "signal and noise subspaces; one colour per checkpoint, from the untrained model on."),
}


def figure_text(key: str, report: dict) -> tuple[str, str]:
    """The figure's title in words and its caption."""
    title, caption = FIGURES.get(key, (key.replace("_", " "), ""))
    if key == "heads_antecedent_hit_rate" and report["heads"].get("uniform_hit_rate") is not None:
        caption += f" The uniform head's rate here is {report['heads']['uniform_hit_rate']:.4f}."
    return title, caption


def summary(report: dict) -> list[dict]:
    """The five numbers that matter, each with its baseline and a reading (rows where they exist). Every
    reading is decided by a 95% interval, never by the sign of a point value: over this model's heads
    (``HEAD_INTERVAL``) for the heads' rows, over the analysed windows (``WINDOW_INTERVAL``) for the loss
    and the intervention, over layers for the ISTA codes; the interval is printed in the reading."""
    rows = []
    heads, init = report["heads"], report.get("heads_init", {}).get("heads", [])
    streams = heads["streams"]
    iv = report.get("interventions") or {}
    if iv.get("base") and report.get("unigram_entropy") is not None:
        rows.append(_context_row(iv["base"], report["unigram_entropy"], report["split"]))
    if len(streams) == 2 and heads["heads"] and "mass_beyond_8" in heads["heads"][0]:
        rows.append(_separation_row(heads, init, *streams))
    if heads["heads"] and "selectivity" in heads["heads"][0]:
        rows.append(_selectivity_row(heads["heads"], streams[0]))
    effects = iv.get("effects") or {}
    if effects:
        name, e = (f"{streams[-1]} stream off", effects.get(f"{streams[-1]} stream off")) if len(streams) > 1 \
            else next(iter(effects.items()))
        if e and e["recall_delta"] is not None and e.get("recall_minus_other"):
            rows.append(_recall_row(name, e))
    if heads["heads"] and init and "sink_first" in heads["heads"][0] and "sink_first" in init[0]:
        rows.append(_sink_row(heads["heads"], init, streams[0]))
    sparsity = report.get("sparsity")
    if sparsity:
        rows.append(_sparsity_row(sparsity))
    return rows


WINDOW_INTERVAL = "95% Student-t interval over the analysed windows (each window's own mean)"


def _three_way(ci: list[float] | None, above: str, below: str, neither: str, of: str) -> str:
    """The reading an interval (of the quantity ``of``) allows: ``above`` when it lies wholly above 0,
    ``below`` wholly below, else ``neither`` (and without an interval, that it cannot say)."""
    if not ci:
        return "one window: no interval, no reading"
    return f"{above if ci[0] > 0 else below if ci[1] < 0 else neither} ({of} [{ci[0]:.3g}, {ci[1]:.3g}])"


def _context_row(base: dict, unigram: float, split: str) -> dict:
    ci = base["support"]["ci95"]
    gap = [unigram - ci[1], unigram - ci[0]] if ci else None  # unigram entropy − loss
    return {"what": f"loss on the analysed windows (nats/token, {split} split)", "value": base["all"],
            "baseline": unigram, "baseline_is": "unigram entropy of the split: predicting from token frequencies alone",
            "interval": gap, "interval_is": WINDOW_INTERVAL + ", of the entropy minus the loss",
            "reading": _three_way(gap, "the model uses context: its loss lies below the unigram entropy",
                                  "worse than token frequencies", "no better than token frequencies, as far as the "
                                  "windows can tell", "entropy − loss")}


def _recall_row(name: str, effect: dict) -> dict:
    paired = effect["recall_minus_other"]
    return {"what": f"{name}: loss change on recall tokens", "value": effect["recall_delta"],
            "baseline": effect["other_delta"], "baseline_is": "the same intervention on all other tokens",
            "interval": paired["ci95"], "interval_is": WINDOW_INTERVAL + f", of recall minus other tokens' change "
                                                                     f"({paired['windows']} windows hold both)",
            "reading": _three_way(paired["ci95"], "it matters more for recall than for the rest",
                                  "it matters less for recall than for the rest",
                                  "no difference between recall and the rest that the windows can see",
                                  "recall − other change")}


def _sparsity_row(sparsity: dict) -> dict:
    from prism_lm.stats import mean_interval

    trained, initial = sparsity["trained"], sparsity.get("initial")
    row = {"what": "ISTA codes: fraction of exact zeros (mean over layers)", "value": trained["mean"],
           "baseline": initial["mean"] if initial else None, "baseline_is": "the untrained model, same windows"}
    if not initial:
        return {**row, "reading": "no untrained model to compare with"}
    change = mean_interval([a - b for a, b in zip(trained["per_layer"], initial["per_layer"], strict=True)])
    return {**row, "interval": change["ci95"], "interval_is": "95% Student-t interval over layers of trained − "
                                                              "untrained",
            "reading": _three_way(change["ci95"], "training made the codes sparser", "training made them denser",
                                  "no change the layers' interval can see", "trained − untrained")}


HEAD_INTERVAL = "95% percentile bootstrap over this model's heads, resampled within each layer"


def _head_interval(values_a: list[dict], values_b: list[dict] | None, metric: str) -> dict:
    """Mean of ``metric`` over heads ``values_a`` (minus over ``values_b``) with its interval over heads."""
    a = [e for e in values_a if e.get(metric) is not None]
    b = [e for e in values_b if e.get(metric) is not None] if values_b is not None else [{"layer": 0, metric: 0.0}]
    return bootstrap_diff([e[metric] for e in a], [e[metric] for e in b],
                          strata_a=[e["layer"] for e in a], strata_b=[e["layer"] for e in b])


def _side(interval: dict) -> int:
    """+1 when the interval lies above 0, -1 below, 0 when it holds 0."""
    lo, hi = interval["ci95"]
    return 1 if lo > 0 else -1 if hi < 0 else 0


def _ci(interval: dict) -> str:
    return f"[{interval['ci95'][0]:.3g}, {interval['ci95'][1]:.3g}]"


def _separation_row(heads: dict, init: list[dict], a: str, b: str) -> dict:
    pick = lambda rows, s: [e for e in rows if e["stream"] == s]  # noqa: E731
    trained = _head_interval(pick(heads["heads"], a), pick(heads["heads"], b), "mass_beyond_8")
    untrained = _head_interval(pick(init, a), pick(init, b), "mass_beyond_8") if init and "mass_beyond_8" in \
        init[0] else None
    side = _side(trained)
    if side == 0:
        reading = f"no difference the heads' interval can see ({_ci(trained)})"
    elif untrained is not None and _side(untrained) == side and abs(untrained["diff"]) >= abs(trained["diff"]):
        reading = f"the separation is there before training ({_ci(untrained)} untrained, {_ci(trained)} trained)"
    else:
        reading = f"{a if side > 0 else b} heads reach further after training ({_ci(trained)})"
    return {"what": f"{a} − {b}: attention mass beyond lag 8 (mean over heads)", "value": trained["diff"],
            "baseline": untrained["diff"] if untrained else None, "interval": trained["ci95"],
            "baseline_is": "the untrained model, same seed and windows", "reading": reading,
            "interval_is": HEAD_INTERVAL}


def _selectivity_row(heads: list[dict], stream: str) -> dict:
    mine = _head_interval([e for e in heads if e["stream"] == stream], None, "selectivity")
    side = _side(mine)
    reading = {1: "they find antecedents beyond what distance gives", -1: "they find them less than distance "
               "alone would", 0: "no selectivity the heads' interval can tell from 0"}[side] + f" ({_ci(mine)})"
    return {"what": f"{stream} heads' selectivity (antecedent hit rate − its lag-matched null)",
            "value": mine["diff"], "baseline": 0.0, "baseline_is": "no selectivity beyond distance",
            "interval": mine["ci95"], "reading": reading, "interval_is": HEAD_INTERVAL}


def _sink_row(heads: list[dict], init: list[dict], stream: str) -> dict:
    pick = lambda rows: [e for e in rows if e["stream"] == stream]  # noqa: E731
    grew = _head_interval(pick(heads), pick(init), "sink_first")
    reading = (f"more mass on the first position than the untrained model ({_ci(grew)} more)" if _side(grew) > 0
               else f"no sink beyond the untrained model's ({_ci(grew)} more)")
    return {"what": f"{stream} heads' attention on the window's first position (sink mass)",
            "value": grew["mean_a"], "baseline": grew["mean_b"], "baseline_is": "the untrained model",
            "interval": grew["ci95"], "reading": reading, "interval_is": HEAD_INTERVAL + " (trained − untrained)"}


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def _tables(report: dict) -> list[tuple[str, str, list[str], list[list]]]:
    """(title, the question it answers, header, rows) for every table, shared by both renderers."""
    return [*_head_tables(report), *_recall_tables(report["heads"]), *_intervention_tables(report),
            *_stream_tables(report), *_dictionary_tables(report), *_rate_tables(report)]


def _intervention_tables(report: dict) -> list:
    iv = report.get("interventions")
    if not iv or not iv["effects"]:
        return []
    kinds = sorted({k for e in iv["effects"].values() for k in e["by_kind"]})
    spans = list(dict.fromkeys(b for e in iv["effects"].values() for b in e.get("by_distance", {})))
    return [(f"Interventions: mean loss change (intervened − unmodified) on recall tokens against the other "
             f"tokens, same {iv['windows']} windows ({iv['recall_tokens']} recall tokens; unmodified: recall "
             f"{_fmt(iv['base']['recall'])}, other {_fmt(iv['base']['other'])})",
             "Which part of the model does the recalling? A stream whose removal raises the loss on recall "
             "tokens more than on the others carries the recall; 0 means it is not needed.",
             ["intervention", "recall tokens", "other tokens", *[f"recall: {k}" for k in kinds],
              *[f"recall at {b} tokens" for b in spans]],
             [[name, e["recall_delta"], e["other_delta"], *[e["by_kind"].get(k) for k in kinds],
               *[e.get("by_distance", {}).get(b) for b in spans]]
              for name, e in iv["effects"].items()])]


def _head_tables(report: dict) -> list:
    tables = []
    heads = report["heads"]
    cols = [k for k in MEASURES if k in heads["heads"][0]]
    where = f"{report['split']} split" + (f", checkpoint step {report['checkpoint_step']}"
                                         if report.get("checkpoint_step") is not None else "")
    tables.append((f"Head statistics ({where}; {heads['windows']} windows, {heads['tokens']:,} tokens)",
                   "What does each head do? Its attention mass by distance, its entropy and, on annotated data, "
                   "its hit rate on the word a recall refers back to beside what its distance profile alone gives.",
                   ["layer", "head", "stream", *[MEASURES[c].label for c in cols]],
                   [[e["layer"], e["head"], e["stream"], *[e[c] for c in cols]] for e in heads["heads"]]))
    tables.append(("What each measure means (the registry, analysis/measures.py)",
                   "Each column's measure: its code name (the key in report.json and the sweep's columns), definition, "
                   "its value for a head that spreads its mass evenly over the visible keys (at a 128-token window; a "
                   "value near it is no finding), and the look-alikes it tells apart.",
                   ["column", "code name", "definition", "uniform head (T = 128)", "tells apart"],
                   glossary(uniform_values(128))))
    comp = heads.get("comparison")
    if comp:
        tables.append((f"{comp['a']} minus {comp['b']} (mean over heads; {comp['interval']})",
                       f"Do the two streams differ? Sign: {comp['a']} − {comp['b']}. The interval resamples this "
                       "one model's heads, so it says nothing about other seeds: a sweep's seed-level interval does.",
                       ["measure", comp["a"], comp["b"], "difference", "CI low", "CI high"],
                       [[MEASURES[k].label if k in MEASURES else k, v["mean_a"], v["mean_b"], v["diff"], *v["ci95"]]
                        for k, v in comp.items() if isinstance(v, dict)]))
    if "heads_init" in report:
        init = report["heads_init"]["heads"]
        streams = list(dict.fromkeys(e["stream"] for e in heads["heads"]))
        rows = []
        for c in cols:
            for stream in streams:
                trained = [e[c] for e in heads["heads"] if e["stream"] == stream]
                untrained = [e[c] for e in init if e["stream"] == stream]
                rows.append([c, stream, float(np.mean(trained)), float(np.mean(untrained))])
        tables.append(("Each stream's mean against the untrained model (same config and seed, same windows)",
                       "What did training change? A difference the untrained model already shows comes from the "
                       "architecture (RoPE bases, initialisation), not from learning.",
                       ["metric", "stream", "trained", "step 0"], rows))
    return tables


def _recall_tables(heads: dict) -> list:
    tables = []
    if "recall_loss" in heads:
        r = heads["recall_loss"]
        tables.append(("Loss on recall tokens (embedded-corpus annotations)",
                       "Does the model get the words that refer back right? Recall tokens against all others; "
                       "the uniform-attention hit rate is the null the heads' hit rates are read against.",
                       ["tokens", "count", "mean loss"],
                       [["recall", r["recall_tokens"], r["recall_mean"]], ["other", r["other_tokens"], r["other_mean"]],
                        ["uniform-attention hit rate", "", heads.get("uniform_hit_rate")]]))
    if "recall_loss" in heads:
        for by, title in (("by_kind", "dependency kind"), ("by_distance", "antecedent distance (tokens)")):
            groups = heads["recall_loss"][by]
            extra = sorted({k for g in groups.values() for k in g} - {"tokens", "loss"})
            what = ("loss, and each stream's mean antecedent hit rate beside its lag-matched null" if extra
                    else "loss")
            tables.append((f"Recall tokens by {title}: {what}",
                           f"Which recalls are hard? The loss on recall tokens grouped by {title}.",
                           [title, "tokens", "mean loss", *extra],
                           [[g, v["tokens"], v["loss"], *[v.get(k) for k in extra]] for g, v in groups.items()]))
    return tables


def _stream_tables(report: dict) -> list:
    tables = []
    heads = report["heads"]
    if heads.get("diversity"):
        div, init_div = heads["diversity"], report.get("heads_init", {}).get("diversity")
        tables.append((f"Head diversity: {div['what']} (untrained: same config and seed)",
                       "Do a stream's heads do different things? 0: all alike; 1: as different as distributions get.",
                       ["stream", "trained", "step 0", *[f"layer {i}" for i in range(len(next(iter(
                           div["per_layer"].values()))))]],
                       [[s, v, init_div["mean"][s] if init_div else None, *div["per_layer"][s]]
                        for s, v in div["mean"].items()]))
    if heads.get("logit_lag"):
        lag = heads["logit_lag"]
        tables.append((f"Empirical cross-kernel: {lag['what']}; mean {lag['mean']:.3f}",
                       "Do the signal and noise heads of a pair move together with distance? Near 0: their "
                       "position profiles are unrelated.",
                       ["layer", *[f"head pair {h}" for h in range(len(lag["per_layer"][0]))]],
                       [[i, *row] for i, row in enumerate(lag["per_layer"])]))
        tables.append(("Empirical cross-kernel against window length: the mean signal-noise logit-lag correlation "
                       "over lags 1..W (how far out the two streams' position profiles keep moving together)",
                       "Does the streams' agreement fade with distance, as the paper's irrational-m argument predicts?",
                       ["lags 1..W", "mean correlation"], [[w, c] for w, c in lag["by_window"].items()]))
    return tables


def _dictionary_tables(report: dict) -> list:
    tables = []
    if "resonance" in report:
        res = report["resonance"]
        ws = [str(w) for w in res["windows"]]
        scaling, w0 = res["rope_scaling"], ws[0]
        tables.append((f"RoPE cross-kernel |K_SN| (first order: cannot tell rational from irrational m) under the "
                       f"model's {scaling!r} scaling (D = {res['head_dim']}; model m = {res['model_multiplier']:.5g})",
                       "How strongly do the two streams' RoPE frequencies interfere, for each multiplier m?",
                       ["m", "value", *[f"matched, W={w}" for w in ws], *[f"all pairs, W={w}" for w in ws]],
                       [[name, res["named_values"][name], *[res["named"][scaling][name][w]["matched"] for w in ws],
                         *[res["named"][scaling][name][w]["all_pairs"] for w in ws]] for name in res["named_values"]]))

        def gap(entry: dict) -> str:
            return "—" if entry["gap"] is None else ("exact" if entry["gap"] == 0 else f"{entry['gap']:.2e}")

        tables.append((f"Closest approach to resonance, smallest |n ω_s − k ω_n| in rad/token over orders n, k ≤ "
                       f"{res['max_order']} and pairs that turn within W = {w0} ('exact': a resonance), under both "
                       f"scalings, and the window (tokens) at which each m's angles first differ from π's by a "
                       f"radian; and m² in rungs of the frequency ladder under 'frequency' scaling (a whole "
                       f"number shifts one stream's ladder onto the other's: an exact resonance, rational or not). "
                       f"{res['what']}",
                       "Can this window tell π from its rational neighbours? Only where the window at which they "
                       "differ is shorter than the context: a finite window cannot see irrationality itself.",
                       ["m", *[f"{s}: {kind}" for s in res["named"]
                               for kind in ("all pairs", "matched", "apart from π")], "m² in ladder rungs"],
                       [[name, *[v for s in res["named"] for v in (
                           gap(res["named"][s][name][w0]["closest"]), gap(res["named"][s][name][w0]["closest_matched"]),
                           "—" if name == "pi" else f"{res['window_to_tell_from_pi'][s][name]:.3g}")],
                         f"{res['ladder_rungs'][name]:.3f}"]
                        for name in res["named_values"]]))
        coh = report["coherence"]
        tables.append((f"Coherence ‖U_sᵀU_n‖₂ (normalised) per layer; floor at orthogonal init for these shapes "
                       f"{coh['floor_at_orthogonal_init']:.3f}. {coh['note']}",
                       "Do the two streams' dictionaries stay apart? Read against the floor, not against 0.",
                       ["layer", "init", "trained", "per head pair (signal h vs noise h), trained"],
                       [[i, a, b, " ".join(f"{x:.3f}" for x in pairs)] for i, (a, b, pairs) in
                        enumerate(zip(coh["init"], coh["trained"], coh["head_pairs_trained"], strict=True))]))
    return tables


def _rate_tables(report: dict) -> list:
    tables = []
    over = report.get("over_training", {})
    if over:
        rows = []
        for name, entry in over.items():
            norms = entry["dictionary_norms"] or {}
            for stream, sinks in entry["sinks"].items():
                heads = [x for layer in norms.get(stream, []) for x in layer]
                rows.append([name, stream, *((float(np.mean(heads)), min(heads), max(heads)) if heads else (None,) * 3),
                             sinks["sink_first"], sinks["sink_first4"]])
        tables.append(("Over training: each stream's dictionary norms ‖U_k‖_F over its heads (with Q = K a larger norm "
                       "sharpens the self-score, so growing norms alone make attention look local) and its sink "
                       "mass (attention on the window's first position and first four), per checkpoint",
                       "Do attention sinks or growing norms appear over training? Step by step, from the untrained "
                       "model on.",
                       ["checkpoint", "stream", "‖U_k‖ mean", "‖U_k‖ min", "‖U_k‖ max", "sink, first",
                        "sink, first four"], rows))
    rates = report["coding_rate"]
    keys = [k for k in ("R", "R_signal", "R_noise", "lambda", "delta_R") if k in next(iter(rates.values()))[0]]
    tables.append(("Coding rate per layer (attention input, ε = 0.5; not scale-normalised, and each checkpoint "
                   "uses its own λ)",
                   "Does each layer's input get more compressible (a higher coding-rate reduction) as training goes?",
                   ["checkpoint", "layer", *keys],
                   [[name, r["layer"], *[r.get(k) for k in keys]] for name, rows in rates.items() for r in rows]))
    if "attention_step" in report:
        st = report["attention_step"]
        tables.append((f"Is attention a gradient-ascent step on ΔR? {st['what']}; fraction of windows where it "
                       "rises, and the cosine between each window's update and ∇ΔR beside the |cosine| of random "
                       "directions of the same shape (mean and 95th percentile: chance). An update no closer to the "
                       "gradient than chance is not a gradient step, whatever ΔR does.",
                       "Is each attention layer the MCR² gradient step the paper derives it as?",
                       ["model", "layer", "ΔR in", "ΔR out", "fraction rising", "cos(update, ∇ΔR)",
                        "random |cos| mean", "random |cos| p95", "windows"],
                       [[name, r["layer"], r["delta_R_in"], r["delta_R_out"], r["rises"], r.get("grad_cosine"),
                         r.get("grad_random_abs_mean"), r.get("grad_random_abs_p95"), r["windows"]]
                        for name in ("init", "trained") for r in st[name]]))
    if report.get("sparsity"):
        sp = report["sparsity"]
        trained, initial = sp["trained"], sp.get("initial") or {"per_layer": [None] * len(sp["trained"]["layers"])}
        tables.append((f"Sparsity of the ISTA codes: {trained['what']} ({trained['tokens']:,} tokens; untrained: "
                       "same config and seed)",
                       "Does the ISTA block produce the sparse codes it is built for, and more so after training?",
                       ["layer", "zeros, trained", "zeros, untrained"],
                       [[layer, a, b] for layer, a, b in zip(trained["layers"], trained["per_layer"],
                                                             initial["per_layer"], strict=True)]))
    return tables


def markdown(report: dict) -> str:
    lines = [f"# Analysis of {report['checkpoint']}", "", _model_line(report), ""]
    if "training" in report:
        lines += [_training_line(report["training"]), ""]
    p = report["probe"]
    lines += [f"Probe: \"{p['text']}\", target {p['target']!r} (layer {p['layer']}, head {p['head']}).", ""]
    if report.get("eval_overrides"):
        lines += [f"Evaluated with `--set {' '.join(report['eval_overrides'])}` (not as trained).", ""]
    lines += ["## Summary: the numbers that matter, each beside its baseline", "",
              *render.markdown_table(["what", "value", "baseline", "reading"],
                                     [[r["what"], r["value"], f"{_fmt(r['baseline'])} ({r['baseline_is']})",
                                       r["reading"]] for r in report["summary"]], _fmt), ""]
    lines += [f"Interactive attention explorer (every layer and head on the probe): [{report['explorer']}]"
              f"({report['explorer']})", "", "## Figures", ""]
    for key, rel in report["figures"].items():
        title, caption = figure_text(key, report)
        lines += [f"### {title}", "", f"![{title}]({rel})", "", caption, ""]
    for title, question, header, rows in _tables(report):
        lines += [f"## {title}", "", f"*{question}*", "", *render.markdown_table(header, rows, _fmt), ""]
    return "\n".join(lines) + "\n"


def _training_line(t: dict) -> str:
    """The run's length and its last evaluation, saying which step and split the number is from."""
    e = t["last_eval"]
    if e is None:
        return f"Trained for {t['iterations']} iterations; the run logged no evaluation."
    when = "before any training step" if e["step"] == 0 else f"at step {e['step']}"
    return (f"Trained for {t['iterations']} iterations; last evaluation {when}: val loss {_fmt(e['val_loss'])} "
            f"(val split; {e['what']}).")


def _model_line(report: dict) -> str:
    m = report["model"]
    step = f", checkpoint step {report['checkpoint_step']}" if report.get("checkpoint_step") is not None else ""
    return (f"{m['attention'].upper()} attention, {m['n_layer']} layers, {m['n_head']} heads, C = {m['n_embd']}, "
            f"T = {m['block_size']}, {m['parameters']:,} parameters{step}. Data: {report['data']} ({report['split']} "
            "split).")


def html_page(report: dict, out: Path) -> str:
    lines = [_model_line(report)] + ([_training_line(report["training"])] if "training" in report else [])
    if report.get("eval_overrides"):
        lines.append(f"Evaluated with --set {' '.join(report['eval_overrides'])} (not as trained).")
    body = [f"<h1>Analysis of {html.escape(report['checkpoint'])}</h1>",
            *[f"<p>{html.escape(line)}</p>" for line in lines],
            f"<p>Probe: {html.escape(report['probe']['text'])}</p>",
            "<h2>Summary: the numbers that matter, each beside its baseline</h2>",
            render.html_table(["what", "value", "baseline", "reading"],
                              [[r["what"], r["value"], f"{_fmt(r['baseline'])} ({r['baseline_is']})", r["reading"]]
                               for r in report["summary"]], _fmt),
            f"<p><a href='{html.escape(report['explorer'])}'>Interactive attention explorer</a> (every layer and "
            "head on the probe)</p>"]
    for key, rel in report["figures"].items():
        title, caption = figure_text(key, report)
        body += [f"<h3>{html.escape(title)}</h3>", render.html_image(out / rel, title),
                 f"<p><em>{html.escape(caption)}</em></p>"]
    for title, question, header, rows in _tables(report):
        body += [f"<h2>{html.escape(title)}</h2>", f"<p><em>{html.escape(question)}</em></p>",
                 render.html_table(header, rows, _fmt)]
    return render.html_page(f"Analysis of {report['checkpoint']}", body)
