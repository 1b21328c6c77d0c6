"""``prism analyze``: every analysis of one run or checkpoint, as report.md, report.html and report.json.

Every number in the reports is computed here from the checkpoint, the run's metrics.jsonl and the
data; report.json holds all of them, report.md and the self-contained report.html (figures
embedded as base64) present them.
"""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path

import numpy as np
import torch

from prism_lm import render
from prism_lm.analysis import figures
from prism_lm.analysis.ablation import intervention_effects
from prism_lm.analysis.capture import capture_attention
from prism_lm.analysis.explore import DEFAULT_TEXT, MAX_TOKENS, write_explorer
from prism_lm.analysis.heads import METRICS, head_statistics, stream_sinks
from prism_lm.analysis.spectral import (
    attention_step_rates,
    coherence_floor,
    dictionary_norms,
    head_pair_coherence,
    layer_coding_rates,
    model_coherence,
    resonance_table,
)
from prism_lm.checkpoint import load_model, read_model_config, resolve_checkpoint_dir
from prism_lm.checkpoint.model import check_same_tokenizer
from prism_lm.config import ModelConfig, TrainConfig, to_dict
from prism_lm.data.shards import ShardSet
from prism_lm.data.tokenizer import Codec
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM
from prism_lm.run_dir import RunDir
from prism_lm.train.loop import initial_model
from prism_lm.train.metrics import read_metrics

PAPER_PROBE = ("The frog found a shiny key. ... The frog looked for a door.", "door")
EMBEDDED_PROBE = (DEFAULT_TEXT, "key")


def _run_and_checkpoint(path: Path) -> tuple[RunDir | None, Path]:
    path = Path(path)
    ckpt = resolve_checkpoint_dir(path)
    run = RunDir(path) if RunDir(path).metrics_path.is_file() else RunDir.of_checkpoint(ckpt)
    return run, ckpt


def _probe(codec: Codec, probe: str | None, target: str | None) -> tuple[list[int], int, str]:
    candidates = [(probe, target or probe.split()[-1])] if probe else [PAPER_PROBE, EMBEDDED_PROBE]
    last_error = None
    for text, word in candidates:
        try:
            ids = codec.encode(text)
        except PrismError as exc:  # a compact vocabulary may lack the paper's words
            last_error = exc
            continue
        labels = [codec.decode([i]) for i in ids]
        hits = [k for k, lab in enumerate(labels) if lab.strip().strip(".,") == word]
        if not hits:
            raise PrismError(f"target {word!r} is not a token of the probe {text!r}")
        return ids, hits[-1], text
    raise PrismError(f"the probe cannot be encoded with this model's vocabulary ({last_error})")


@torch.no_grad()
def analyze_run(path: str | Path, data_dir: str | Path | None, out: str | Path, max_windows: int = 64,
                references: list[tuple[str, float]] = (), layer: int | None = None, head: int = 0,
                probe: str | None = None, target: str | None = None, device: str = "cpu",
                overrides: list[str] = ()) -> dict[str, Path]:
    """Every analysis of a run (or a bare checkpoint) on ``data_dir`` (None: the data folder its run
    recorded), written as report.md, report.html, report.json and explore.html into the new folder
    ``out``; ``overrides`` are ``load_model``'s evaluation-time changes to the trained model."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise PrismError(f"refusing to write into non-empty {out}; choose a new --out")
    from prism_lm.run_dir import recorded_data_dir
    from prism_lm.train.parallel import resolve_device

    run, ckpt = _run_and_checkpoint(Path(path))
    data_dir = data_dir or recorded_data_dir(ckpt)
    model = load_model(ckpt, device=resolve_device(device), overrides=overrides)
    codec = model.codec
    if codec is None:
        raise PrismError(f"{ckpt} records no tokenizer and its vocabulary is not GPT-2's: no text to probe it with")
    check_same_tokenizer(ckpt, data_dir, codec)
    shards = _analysis_split(data_dir, model)
    cfg = model.config
    layer = _check_options(cfg, layer, head, max_windows)
    report: dict = {"checkpoint": str(ckpt), "run": str(run.path) if run else None, "data": str(data_dir),
                    "split": shards.split, "model": {**to_dict(cfg), "parameters": model.num_params()},
                    "references": [{"label": label, "value": value} for label, value in references],
                    "checkpoint_step": read_model_config(ckpt)[1].get("step"), "eval_overrides": list(overrides)}
    figs: dict[str, Path] = {}
    fig_dir = out / "figures"
    _add_training(report, figs, run, fig_dir, references)
    initial = _initial_model(run, cfg)
    _add_heads(report, figs, model, initial, shards, max_windows, fig_dir)
    report["interventions"] = intervention_effects(model, shards, max_windows=max_windows)
    ids, text = _add_probe(report, figs, model, codec, probe, target, layer, head, fig_dir)
    if cfg.attention == "prism":
        _add_dictionary(report, figs, model, initial, fig_dir)
    _add_coding_rates(report, figs, model, initial, run, ckpt, shards, fig_dir)
    report["figures"] = {k: str(v.relative_to(out)) for k, v in figs.items()}
    explore_text = text if ids and len(ids) <= min(MAX_TOKENS, cfg.block_size) else None
    report["explorer"] = write_explorer(ckpt, out / "explore.html", explore_text, overrides=overrides).name
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(_markdown(report), encoding="utf-8")
    (out / "report.html").write_text(_html(report, out), encoding="utf-8")
    return {"md": out / "report.md", "html": out / "report.html", "json": out / "report.json"}


def _analysis_split(data_dir: str | Path, model: PrismLM) -> ShardSet:
    """The val split, or train when val cannot hold one window."""
    split = "val" if len(ShardSet(data_dir, "val")) > model.config.block_size + 1 else "train"
    shards = ShardSet(data_dir, split)
    if shards.vocab_size > model.config.vocab_size:
        raise PrismError(f"data vocabulary ({shards.vocab_size}) does not fit the model ({model.config.vocab_size})")
    return shards


def _check_options(cfg: ModelConfig, layer: int | None, head: int, max_windows: int) -> int:
    """The probe layer (default: the last), after checking the options against the model."""
    layer = cfg.n_layer - 1 if layer is None else layer
    if not 0 <= layer < cfg.n_layer:
        raise PrismError(f"--layer must be in [0, {cfg.n_layer}) for this model, got {layer}")
    if not 0 <= head < cfg.n_head:
        raise PrismError(f"--head must be in [0, {cfg.n_head}) for this model, got {head}")
    if max_windows < 1:
        raise PrismError(f"--max-windows must be >= 1, got {max_windows}")
    return layer


def _add_training(report: dict, figs: dict, run: RunDir | None, fig_dir: Path, references) -> None:
    """Loss curves, gradient norm and λ, and the run's last evaluation, from its metrics.jsonl."""
    records = read_metrics(run.metrics_path) if run else []
    if not records:
        return
    figs["loss"] = figures.loss_curves(records, fig_dir, references)
    figs["grad_norm_lambda"] = figures.grad_norm_and_lambda(records, fig_dir)
    evals = [r for r in records if r["type"] == "eval"]
    last = evals[-1] if evals else None
    report["training"] = {"iterations": max(r["iter"] for r in records),
                          "last_eval": None if last is None else {
                              "step": last["iter"], "val_loss": last["val_loss"], "train_loss": last["train_loss"],
                              "what": "the training loop's estimate over run.eval_iters random batches"}}


def _add_heads(report: dict, figs: dict, model: PrismLM, initial: PrismLM, shards: ShardSet, max_windows: int,
               fig_dir: Path) -> None:
    """Head statistics of the trained model and of its step 0, on the same windows."""
    stats = head_statistics(model, shards, max_windows=max_windows)
    report["heads"] = stats
    report["heads_init"] = head_statistics(initial, shards, max_windows=max_windows)
    for metric in ("mean_distance", "mass_within_8", "antecedent_hit_rate"):
        if metric in stats["heads"][0]:
            figs[f"heads_{metric}"] = figures.head_metrics(stats["heads"], metric, fig_dir)


def _add_probe(report: dict, figs: dict, model: PrismLM, codec: Codec, probe: str | None, target: str | None,
               layer: int, head: int, fig_dir: Path) -> tuple[list[int], str]:
    """One head's maps on the probe and every head of the first stream at the target token."""
    ids, tgt, text = _probe(codec, probe, target)
    cache = capture_attention(model, torch.tensor([ids]))
    labels = [codec.decode([i]).replace("\n", "\\n") for i in ids]
    maps = {s: cache.stream(layer, s)[0, head].numpy() for s in cache.streams[layer]}
    figs["head_maps"] = figures.stream_maps(maps, labels, tgt, fig_dir, f"Layer {layer}, head {head}: "
                                            f"query {labels[tgt]!r} highlighted")
    first = cache.streams[layer][0]
    figs["target_grid"] = figures.target_grid(cache.stream(layer, first)[0, :, tgt].numpy(), labels, tgt, first,
                                              layer, fig_dir)
    report["probe"] = {"text": text, "target": labels[tgt], "target_position": tgt, "layer": layer, "head": head,
                       "attention_from_target": {s: cache.stream(layer, s)[0, :, tgt, : tgt + 1].tolist()
                                                 for s in cache.streams[layer]}}
    return ids, text


def _add_dictionary(report: dict, figs: dict, model: PrismLM, initial: PrismLM, fig_dir: Path) -> None:
    """PRISM's RoPE resonance numerics and the coherence of its two streams' dictionaries."""
    cfg = model.config
    table = resonance_table(cfg, windows=(cfg.block_size, 4 * cfg.block_size))
    report["resonance"] = {**table, "model_multiplier": cfg.multiplier}
    figs["resonance"] = figures.resonance(table, fig_dir)
    report["coherence"] = {
        "init": model_coherence(initial), "trained": model_coherence(model),
        "floor_at_orthogonal_init": coherence_floor(cfg),
        "head_pairs_trained": [head_pair_coherence(b.attn) for b in model.blocks],
        "note": "‖U_sᵀU_n‖ normalised is 0 only for complementary subspaces; each R = 2 stream spans the whole "
                "space, so the whole-stream value starts near the floor above and a change shows how the "
                "streams' strongest directions align, not whether they are separated"}


def _add_coding_rates(report: dict, figs: dict, model: PrismLM, initial: PrismLM, run: RunDir | None, ckpt: Path,
                      shards: ShardSet, fig_dir: Path) -> None:
    """Coding rates per layer across the run's checkpoints, and the attention-step ΔR test."""
    cfg = model.config
    n_batch = min(4, (len(shards) - 1) // cfg.block_size)
    batch = torch.from_numpy(shards.windows([w * cfg.block_size for w in range(n_batch)], cfg.block_size))
    rates = {"init": layer_coding_rates(initial, batch)}
    over = {"init": {"dictionary_norms": dictionary_norms(initial), "sinks": stream_sinks(initial, batch)}}
    for step_dir in (run.steps() if run else []) or [ckpt]:
        at_step = load_model(step_dir)
        rates[step_dir.name] = layer_coding_rates(at_step, batch)
        over[step_dir.name] = {"dictionary_norms": dictionary_norms(at_step), "sinks": stream_sinks(at_step, batch)}
    report["coding_rate"] = rates
    report["over_training"] = over
    step = attention_step_rates(model, batch)
    if step is not None:
        report["attention_step"] = {"trained": step, "init": attention_step_rates(initial, batch),
                                    "what": "scale-normalised ΔR (unit tokens, ‖U_k‖_F² = D, the layer's own U "
                                            "and λ) of each window's attention input Z and of Z + attention(Z)"}
    figs["coding_rate"] = figures.coding_rates({_step_of(k): v for k, v in rates.items()}, fig_dir)


def _initial_model(run: RunDir | None, cfg: ModelConfig) -> PrismLM:
    """The run's model at step 0, rebuilt from its recorded config and seed (a bare checkpoint:
    the default run settings)."""
    recorded = run.read_config() if run else None
    return initial_model(dataclasses.replace(recorded or TrainConfig(), model=cfg)).eval()


def _step_of(name: str) -> int:
    return 0 if name == "init" else int(name.split("-")[-1]) if name.startswith("step-") else -1


# --------------------------------------------------------------------------- rendering

def _fmt(x) -> str:
    return "–" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def _tables(report: dict) -> list[tuple[str, list[str], list[list]]]:
    """(title, header, rows) for every table, shared by the Markdown and HTML renderers."""
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
             ["intervention", "recall tokens", "other tokens", *[f"recall: {k}" for k in kinds],
              *[f"recall at {b} tokens" for b in spans]],
             [[name, e["recall_delta"], e["other_delta"], *[e["by_kind"].get(k) for k in kinds],
               *[e.get("by_distance", {}).get(b) for b in spans]]
              for name, e in iv["effects"].items()])]


def _head_tables(report: dict) -> list:
    tables = []
    heads = report["heads"]
    cols = [k for k in (*METRICS, "mass_beyond_far", "antecedent_hit_rate", "antecedent_lag_null")
            if k in heads["heads"][0]]
    where = f"{report['split']} split" + (f", checkpoint step {report['checkpoint_step']}"
                                         if report.get("checkpoint_step") is not None else "")
    tables.append((f"Head statistics ({where}; {heads['windows']} windows, {heads['tokens']:,} tokens)",
                   ["layer", "head", "stream", *cols],
                   [[e["layer"], e["head"], e["stream"], *[e[c] for c in cols]] for e in heads["heads"]]))
    comp = heads.get("comparison")
    if comp:
        tables.append((f"{comp['a']} minus {comp['b']} (mean over heads; {comp['interval']})",
                       ["metric", comp["a"], comp["b"], "difference", "CI low", "CI high"],
                       [[k, v["mean_a"], v["mean_b"], v["diff"], *v["ci95"]] for k, v in comp.items()
                        if isinstance(v, dict)]))
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
                       ["metric", "stream", "trained", "step 0"], rows))
    return tables


def _recall_tables(heads: dict) -> list:
    tables = []
    if "recall_loss" in heads:
        r = heads["recall_loss"]
        tables.append(("Loss on recall tokens (embedded-corpus annotations)", ["tokens", "count", "mean loss"],
                       [["recall", r["recall_tokens"], r["recall_mean"]], ["other", r["other_tokens"], r["other_mean"]],
                        ["uniform-attention hit rate", "", heads.get("uniform_hit_rate")]]))
    if "recall_loss" in heads:
        for by, title in (("by_kind", "dependency kind"), ("by_distance", "antecedent distance (tokens)")):
            groups = heads["recall_loss"][by]
            extra = sorted({k for g in groups.values() for k in g} - {"tokens", "loss"})
            tables.append((f"Recall tokens by {title}: loss, and each stream's mean antecedent hit rate beside its "
                           "lag-matched null", [title, "tokens", "mean loss", *extra],
                           [[g, v["tokens"], v["loss"], *[v.get(k) for k in extra]] for g, v in groups.items()]))
    return tables


def _stream_tables(report: dict) -> list:
    tables = []
    heads = report["heads"]
    if heads.get("diversity"):
        div, init_div = heads["diversity"], report.get("heads_init", {}).get("diversity")
        tables.append((f"Head diversity: {div['what']} (untrained: same config and seed)",
                       ["stream", "trained", "step 0", *[f"layer {i}" for i in range(len(next(iter(
                           div["per_layer"].values()))))]],
                       [[s, v, init_div["mean"][s] if init_div else None, *div["per_layer"][s]]
                        for s, v in div["mean"].items()]))
    if heads.get("logit_lag"):
        lag = heads["logit_lag"]
        tables.append((f"Empirical cross-kernel: {lag['what']}; mean {lag['mean']:.3f}",
                       ["layer", *[f"head pair {h}" for h in range(len(lag["per_layer"][0]))]],
                       [[i, *row] for i, row in enumerate(lag["per_layer"])]))
        tables.append(("Empirical cross-kernel against window length: the mean signal-noise logit-lag correlation "
                       "over lags 1..W (how far out the two streams' position profiles keep moving together)",
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
                       ["m", "value", *[f"matched, W={w}" for w in ws], *[f"all pairs, W={w}" for w in ws]],
                       [[name, res["named_values"][name], *[res["named"][scaling][name][w]["matched"] for w in ws],
                         *[res["named"][scaling][name][w]["all_pairs"] for w in ws]] for name in res["named_values"]]))

        def gap(entry: dict) -> str:
            return "—" if entry["gap"] is None else ("exact" if entry["gap"] == 0 else f"{entry['gap']:.2e}")

        tables.append((f"Closest approach to resonance, smallest |n ω_s − k ω_n| in rad/token over orders n, k ≤ "
                       f"{res['max_order']} and pairs that turn within W = {w0} ('exact': a resonance), under both "
                       f"scalings, and the window (tokens) at which each m's angles first differ from π's by a "
                       f"radian. {res['what']}",
                       ["m", *[f"{s}: {kind}" for s in res["named"]
                               for kind in ("all pairs", "matched", "apart from π")]],
                       [[name, *[v for s in res["named"] for v in (
                           gap(res["named"][s][name][w0]["closest"]), gap(res["named"][s][name][w0]["closest_matched"]),
                           "—" if name == "pi" else f"{res['window_to_tell_from_pi'][s][name]:.3g}")]]
                        for name in res["named_values"]]))
        coh = report["coherence"]
        tables.append((f"Coherence ‖U_sᵀU_n‖₂ (normalised) per layer; floor at orthogonal init for these shapes "
                       f"{coh['floor_at_orthogonal_init']:.3f}. {coh['note']}",
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
                       ["checkpoint", "stream", "‖U_k‖ mean", "‖U_k‖ min", "‖U_k‖ max", "sink, first",
                        "sink, first four"], rows))
    rates = report["coding_rate"]
    keys = [k for k in ("R", "R_signal", "R_noise", "lambda", "delta_R") if k in next(iter(rates.values()))[0]]
    tables.append(("Coding rate per layer (attention input, ε = 0.5; not scale-normalised, and each checkpoint "
                   "uses its own λ)", ["checkpoint", "layer", *keys],
                   [[name, r["layer"], *[r.get(k) for k in keys]] for name, rows in rates.items() for r in rows]))
    if "attention_step" in report:
        st = report["attention_step"]
        tables.append((f"Is attention a gradient-ascent step on ΔR? {st['what']}; fraction of windows where it "
                       "rises, and the cosine between each window's update and ∇ΔR beside the |cosine| of random "
                       "directions of the same shape (mean and 95th percentile: chance). An update no closer to the "
                       "gradient than chance is not a gradient step, whatever ΔR does.",
                       ["model", "layer", "ΔR in", "ΔR out", "fraction rising", "cos(update, ∇ΔR)",
                        "random |cos| mean", "random |cos| p95", "windows"],
                       [[name, r["layer"], r["delta_R_in"], r["delta_R_out"], r["rises"], r.get("grad_cosine"),
                         r.get("grad_random_abs_mean"), r.get("grad_random_abs_p95"), r["windows"]]
                        for name in ("init", "trained") for r in st[name]]))
    return tables


def _markdown(report: dict) -> str:
    lines = [f"# Analysis of {report['checkpoint']}", "", _model_line(report), ""]
    if "training" in report:
        lines += [_training_line(report["training"]), ""]
    p = report["probe"]
    lines += [f"Probe: \"{p['text']}\", target {p['target']!r} (layer {p['layer']}, head {p['head']}).", ""]
    for title, header, rows in _tables(report):
        lines += [f"## {title}", "", *render.markdown_table(header, rows, _fmt), ""]
    lines += [f"Interactive attention explorer (every layer and head on the probe): [{report['explorer']}]"
              f"({report['explorer']})", ""]
    lines += ["## Figures", ""] + [f"![{k}]({v})" for k, v in report["figures"].items()]
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


def _html(report: dict, out: Path) -> str:
    lines = [_model_line(report)] + ([_training_line(report["training"])] if "training" in report else [])
    body = [f"<h1>Analysis of {html.escape(report['checkpoint'])}</h1>",
            *[f"<p>{html.escape(line)}</p>" for line in lines],
            f"<p>Probe: {html.escape(report['probe']['text'])}</p>",
            f"<p><a href='{html.escape(report['explorer'])}'>Interactive attention explorer</a> (every layer and "
            "head on the probe)</p>"]
    for name, rel in report["figures"].items():
        body += [f"<h3>{html.escape(name)}</h3>", render.html_image(out / rel, name)]
    for title, header, rows in _tables(report):
        body += [f"<h2>{html.escape(title)}</h2>", render.html_table(header, rows, _fmt)]
    return render.html_page(f"Analysis of {report['checkpoint']}", body)
