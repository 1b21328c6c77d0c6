"""``prism analyze``: every analysis of one run or checkpoint, as report.md, report.html and report.json.

Every number in the reports is computed here from the checkpoint, the run's metrics.jsonl and the
data; report.json holds all of them, report.md and the self-contained report.html (figures
embedded as base64) present them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from prism_lm.analysis import figures
from prism_lm.analysis.ablation import intervention_effects
from prism_lm.analysis.capture import capture_attention
from prism_lm.analysis.explore import DEFAULT_TEXT, MAX_TOKENS, write_explorer
from prism_lm.analysis.heads import head_statistics, stream_sinks
from prism_lm.analysis.report_text import html_page, markdown, summary
from prism_lm.analysis.spectral import (
    attention_step_rates,
    coherence_floor,
    dictionary_norms,
    head_pair_coherence,
    layer_coding_rates,
    model_coherence,
    resonance_table,
)
from prism_lm.bounds import bounded_int
from prism_lm.checkpoint import load_model, read_model_config, resolve_checkpoint_dir
from prism_lm.checkpoint.model import initial_model, open_on_data
from prism_lm.config import ModelConfig, TrainConfig, to_dict
from prism_lm.data.shards import ShardSet, unigram_entropy
from prism_lm.data.tokenizer import Codec
from prism_lm.errors import PrismError
from prism_lm.files import atomic_directory
from prism_lm.model import PrismLM
from prism_lm.run_dir import RunDir, trained_on_bos

PAPER_PROBE = ("The frog found a shiny key. ... The frog looked for a door.", "door")
EMBEDDED_PROBE = (DEFAULT_TEXT, "key")


def _run_and_checkpoint(path: Path) -> tuple[RunDir | None, Path]:
    path = Path(path)
    ckpt = resolve_checkpoint_dir(path)
    run = RunDir(path) if RunDir(path).metrics_path.is_file() else RunDir.of_checkpoint(ckpt)
    return run, ckpt


def _probe(codec: Codec, probe: str | None, target: str | None, max_tokens: int) -> tuple[list[int], int, str]:
    """The probe's ids, the target's position and the text; a default probe longer than the model's
    context keeps its last ``max_tokens`` tokens (the target is its last word), a given one is refused."""
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
        if len(ids) > max_tokens:
            if probe:
                raise PrismError(f"--probe has {len(ids)} tokens; this model reads at most {max_tokens}")
            cut = len(ids) - max_tokens
            ids, hits, text = ids[cut:], [h - cut for h in hits if h >= cut], codec.decode(ids[cut:])
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
    _check_request(out, probe, target)
    run, ckpt = _run_and_checkpoint(Path(path))
    model, ckpt, data_dir = open_on_data(ckpt, data_dir, device, overrides)
    codec = model.codec
    if codec is None:
        raise PrismError(f"{ckpt} records no tokenizer and its vocabulary is not GPT-2's: no text to probe it with")
    shards = _analysis_split(data_dir, model)
    cfg = model.config
    layer = _check_options(cfg, layer, head, max_windows)
    report: dict = {"checkpoint": str(ckpt), "run": str(run.path) if run else None, "data": str(data_dir),
                    "split": shards.split, "model": {**to_dict(cfg), "parameters": model.num_params()},
                    "references": [{"label": label, "value": value} for label, value in references],
                    "checkpoint_step": read_model_config(ckpt)[1].get("step"), "eval_overrides": list(overrides)}
    with atomic_directory(out) as work:  # complete or absent: a failure half-way leaves no partial report
        figs: dict[str, Path] = {}
        fig_dir = work / "figures"
        report["unigram_entropy"] = unigram_entropy(shards)
        with _step("training curves"):
            _add_training(report, figs, run, fig_dir, references)
        initial = _initial_model(run, cfg).to(next(model.parameters()).device)
        bos = report["bos_windows"] = trained_on_bos(ckpt)  # read the windows it trained on
        with _step(f"head statistics, trained and untrained ({max_windows} windows each)"):
            _add_heads(report, figs, model, initial, shards, max_windows, fig_dir, bos)
        with _step("interventions (each stream silenced)"):
            report["interventions"] = intervention_effects(model, shards, max_windows=max_windows, bos=bos)
        if cfg.mlp == "ista":
            from prism_lm.analysis.sparsity import ista_sparsity

            with _step("ISTA code sparsity"):
                report["sparsity"] = {"trained": ista_sparsity(model, shards, max_windows),
                                      "initial": ista_sparsity(initial, shards, max_windows)}
        with _step("probe maps"):
            ids, text = _add_probe(report, figs, model, codec, probe, target, layer, head, fig_dir)
        if cfg.attention == "prism":
            with _step("RoPE resonance and dictionary coherence"):
                _add_dictionary(report, figs, model, initial, fig_dir)
        with _step("coding rates and dictionary norms per checkpoint, and the ΔR gradient test"):
            _add_coding_rates(report, figs, model, initial, run, ckpt, shards, fig_dir)
        report["figures"] = {k: str(v.relative_to(work)) for k, v in figs.items()}
        explore_text = text if ids and len(ids) <= min(MAX_TOKENS, cfg.block_size) else None
        with _step("explorer page"):
            report["explorer"] = write_explorer(ckpt, work / "explore.html", explore_text, device=str(
                next(model.parameters()).device), overrides=overrides).name
        _write_report(report, work)
    return {"md": out / "report.md", "html": out / "report.html", "json": out / "report.json"}


def _check_request(out: Path, probe: str | None, target: str | None) -> None:
    """Refuse, before anything loads, an output folder with files in it and a probe or target that cannot work."""
    if out.exists() and any(out.iterdir()):
        raise PrismError(f"refusing to write into non-empty {out}; choose a new --out")
    if probe is not None and not probe.strip():
        raise PrismError("--probe is empty; give a text, or leave it out for the default probe")
    if target is not None and probe is None:
        raise PrismError("--target names a word of --probe: give --probe too (the default probe has its own target)")


def _write_report(report: dict, work: Path) -> None:
    """The summary, then report.json, report.md and report.html into ``work``."""
    report["summary"] = summary(report)
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (work / "report.md").write_text(markdown(report), encoding="utf-8")
    (work / "report.html").write_text(html_page(report, work), encoding="utf-8")


@contextlib.contextmanager
def _step(what: str):
    """One line on stderr per step of the analysis, with its time (a step can take a minute)."""
    print(f"[analyze] {what} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    yield
    print(f"[analyze] {what}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


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
    bounded_int(layer, "--layer (this model's layers)", 0, cfg.n_layer)
    bounded_int(head, "--head (this model's heads)", 0, cfg.n_head)
    bounded_int(max_windows, "--max-windows", 1)
    return layer


def _add_training(report: dict, figs: dict, run: RunDir | None, fig_dir: Path, references) -> None:
    """Loss curves, gradient norm and λ, and the run's last evaluation, from its metrics.jsonl."""
    records = run.read_metrics() if run else []
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
               fig_dir: Path, bos: bool = False) -> None:
    """Head statistics of the trained model and of its step 0, on the same windows."""
    stats = head_statistics(model, shards, max_windows=max_windows, bos=bos)
    report["heads"] = stats
    report["heads_init"] = head_statistics(initial, shards, max_windows=max_windows, bos=bos)
    for metric in ("mean_distance", "mass_within_8", "antecedent_hit_rate"):
        if metric in stats["heads"][0]:
            null = stats.get("uniform_hit_rate") if metric == "antecedent_hit_rate" else None
            figs[f"heads_{metric}"] = figures.head_metrics(stats["heads"], metric, fig_dir, null=null,
                                                           null_label="uniform attention")


def _add_probe(report: dict, figs: dict, model: PrismLM, codec: Codec, probe: str | None, target: str | None,
               layer: int, head: int, fig_dir: Path) -> tuple[list[int], str]:
    """One head's maps on the probe and every head of the first stream at the target token."""
    ids, tgt, text = _probe(codec, probe, target, model.max_positions)
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
    report["resonance"] = {**table, "model_multiplier": cfg.prism.multiplier}
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
    device = next(model.parameters()).device
    batch = torch.from_numpy(shards.windows([w * cfg.block_size for w in range(n_batch)], cfg.block_size)).to(device)
    rates = {"init": layer_coding_rates(initial, batch)}
    over = {"init": {"dictionary_norms": dictionary_norms(initial), "sinks": stream_sinks(initial, batch)}}
    for step_dir in (run.steps() if run else []) or [ckpt]:
        at_step = load_model(step_dir, device=device)
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
