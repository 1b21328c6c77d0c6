"""The functional test of roles: what a model gets wrong when an intervention silences a part of it.

For each intervention (``model.interventions.intervene`` keyword arguments, by name) the per-token
loss over the same windows is compared with the unmodified model's: the mean change on recall
tokens (embedded-corpus annotations whose antecedent lies inside the window), by dependency kind
and by recall-to-antecedent distance (the heads module's buckets), and on every other token. A
stream whose removal hurts recall more than the rest is doing the recalling; one whose removal
changes nothing is not needed for it.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from prism_lm.analysis.heads import DISTANCE_BUCKETS, distance_bucket
from prism_lm.bounds import bounded_int
from prism_lm.data.loader import window_starts
from prism_lm.data.shards import ShardSet
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM
from prism_lm.model.interventions import intervene


def default_interventions(model: PrismLM) -> dict[str, dict]:
    """Silence each stream of the model's kind in every layer (PRISM: signal, noise; DIFF: positive,
    negative; one-stream kinds: all heads of the first and of the last layer)."""
    streams = model.blocks[0].attn.stream_names
    if len(streams) > 1:
        return {f"{s} stream off": {"zero_streams": [s]} for s in streams}
    last = len(model.blocks) - 1
    return {f"layer {i} heads off": {"zero_streams": list(streams), "layers": [i]} for i in dict.fromkeys((0, last))}


@torch.no_grad()
def _token_losses(model: PrismLM, rows: torch.Tensor, edit: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) per-token losses and (B, T) whether each target is the top prediction, under ``edit``."""
    device = next(model.parameters()).device
    x, y = rows[:, :-1].to(device), rows[:, 1:].to(device)
    with contextlib.nullcontext() if edit is None else intervene(model, **edit):
        out = model(x, y, reduction="none")
    return out.loss.cpu(), (out.logits.argmax(-1) == y).cpu()


def _recall_mask(shards: ShardSet, starts: list[int], T: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T) bool: the target positions that predict a recall token whose antecedent is in the
    window; (B, T) int: its kind id, and (B, T) int: its recall-to-antecedent distance (-1 elsewhere)."""
    notes = shards.annotations()
    mask = torch.zeros(len(starts), T, dtype=torch.bool)
    kind = torch.full((len(starts), T), -1, dtype=torch.long)
    distance = torch.full((len(starts), T), -1, dtype=torch.long)
    for row, start in enumerate(starts):
        for r, antecedent, k in notes[(notes[:, 0] > start) & (notes[:, 0] <= start + T) & (notes[:, 1] >= start)]:
            mask[row, r - start - 1] = True
            kind[row, r - start - 1] = int(k)
            distance[row, r - start - 1] = int(r - antecedent)
    return mask, kind, distance


def intervention_effects(model: PrismLM, shards: ShardSet, interventions: dict[str, dict] | None = None,
                         max_windows: int = 32, batch_size: int = 8, bos: bool = False) -> dict:
    """Per intervention: the mean loss change (intervened − unmodified) on recall tokens, by kind, and
    on the other tokens, over the same ``max_windows`` windows of the model's block size
    (``data.loader.window_starts``: ``bos`` for models trained on windows that open on a BOS)."""
    model.eval()
    T = model.config.block_size
    interventions = default_interventions(model) if interventions is None else interventions
    starts = window_starts(shards, T, max_windows, bos)
    n = len(starts)
    kinds = shards.manifest.get("annotation_kinds", [])
    base, edited, masks, kind_ids, distances = [], {name: [] for name in interventions}, [], [], []
    base_hits, edited_hits = [], {name: [] for name in interventions}
    for first in range(0, n, batch_size):
        ids = starts[first:first + batch_size]
        rows = torch.from_numpy(shards.windows(ids, T + 1))
        for losses, hits, (nll, correct) in ((base, base_hits, _token_losses(model, rows, None)),
                                             *((edited[k], edited_hits[k], _token_losses(model, rows, e))
                                               for k, e in interventions.items())):
            losses.append(nll)
            hits.append(correct)
        mask, kind, distance = _recall_mask(shards, ids, T)
        masks.append(mask)
        kind_ids.append(kind)
        distances.append(distance)
    base_nll, mask, kind, distance = torch.cat(base), torch.cat(masks), torch.cat(kind_ids), torch.cat(distances)
    base_correct = torch.cat(base_hits)
    buckets = {distance_bucket(lo): mask & (distance >= lo) & (distance <= (hi or T)) for lo, hi in DISTANCE_BUCKETS}
    out = {"windows": n, "tokens": int(mask.numel()), "recall_tokens": int(mask.sum()),
           "base": {"all": _mean(base_nll.flatten()), "recall": _mean(base_nll[mask]),
                    "other": _mean(base_nll[~mask]), "recall_accuracy": _mean(base_correct[mask].float()),
                    "support": _support(base_nll, torch.ones_like(mask))},
           "effects": {}}
    groups = {"all": torch.ones_like(mask), "recall": mask, "other": ~mask,
              **{f"recall: {k}": kind == i for i, k in enumerate(kinds)},
              **{f"recall at {b} tokens": m for b, m in buckets.items()}}
    for name, parts in edited.items():
        delta = torch.cat(parts) - base_nll
        out["effects"][name] = {
            "edit": interventions[name], "all_delta": _mean(delta.flatten()), "recall_delta": _mean(delta[mask]),
            "other_delta": _mean(delta[~mask]),
            "recall_accuracy": _mean(torch.cat(edited_hits[name])[mask].float()),
            "by_kind": {k: _mean(delta[kind == i]) for i, k in enumerate(kinds) if bool((kind == i).any())},
            "by_distance": {b: _mean(delta[m]) for b, m in buckets.items() if bool(m.any())},
            "support": {group: _support(delta, m) for group, m in groups.items() if bool(m.any())},
            "recall_minus_other": _paired_support(delta, mask)}
    return out


def _paired_support(delta: torch.Tensor, mask: torch.Tensor) -> dict:
    """How much more an intervention changes recall tokens than the others, window by window: the mean
    over windows holding both of (its recall tokens' mean change − its other tokens' mean change), with
    a 95% Student-t interval over those windows."""
    from prism_lm.stats import mean_interval

    recall_n, other_n = mask.sum(1), (~mask).sum(1)
    both = (recall_n > 0) & (other_n > 0)
    recall = (delta * mask).sum(1)[both] / recall_n[both]
    other = (delta * ~mask).sum(1)[both] / other_n[both]
    summary = mean_interval((recall - other).tolist())
    return {"delta": summary["mean"], "windows": summary["n"], "ci95": summary["ci95"]}


def _support(delta: torch.Tensor, mask: torch.Tensor) -> dict:
    """A group's mean change over its tokens and what it rests on: its token count, the windows holding
    them, and a 95% Student-t interval over those windows of each window's mean change (the tokens of
    one window are not independent draws, the windows are closer to it)."""
    from prism_lm.stats import mean_interval

    counts, sums = mask.sum(1), (delta * mask).sum(1)
    has = counts > 0
    per_window = (sums[has] / counts[has]).tolist()
    return {"delta": float(sums.sum() / counts.sum()), "tokens": int(counts.sum()), "windows": int(has.sum()),
            "ci95": mean_interval(per_window)["ci95"]}


def head_ablation_spread(model: PrismLM, shards: ShardSet, max_windows: int = 16) -> dict[str, dict[str, float]]:
    """Per stream: the mean and the standard deviation over heads (every layer) of the loss change on
    all tokens when that one head is zeroed. A stream whose heads play different roles has a wide
    spread; interchangeable heads, a narrow one."""
    attn = model.blocks[0].attn
    heads = {(layer, s, h): {"zero_heads": [(layer, s, h)]} for layer in range(len(model.blocks))
             for s in attn.stream_names for h in range(attn.n_head)}
    effects = intervention_effects(model, shards, {f"{k}": edit for k, edit in heads.items()}, max_windows)["effects"]
    out = {}
    for s in attn.stream_names:
        deltas = np.array([effects[f"{k}"]["all_delta"] for k in heads if k[1] == s])
        out[s] = {"mean": float(deltas.mean()), "spread": float(deltas.std(ddof=1)) if len(deltas) > 1 else 0.0}
    return out


def _mean(x: torch.Tensor) -> float | None:
    return float(np.mean(x.numpy())) if x.numel() else None


def parse_heads(specs: list[str], model: PrismLM, stream: str | None) -> list[tuple[int, str, int]]:
    """"L.H" (in ``stream``, default the first) or "L.STREAM.H" -> (layer, stream, head)."""
    default = stream or model.blocks[0].attn.stream_names[0]
    out = []
    for spec in specs:
        parts = spec.split(".")
        try:
            if len(parts) == 2:
                out.append((int(parts[0]), default, int(parts[1])))
            elif len(parts) == 3:
                out.append((int(parts[0]), parts[1], int(parts[2])))
            else:
                raise ValueError
        except ValueError:
            raise PrismError(f"--heads takes LAYER.HEAD or LAYER.STREAM.HEAD, got {spec!r}") from None
    return out


def ablation_plan(model: PrismLM, lambdas: list[float] | None = None, stream: str | None = None,
                  heads: list[str] = (), per_layer: bool = False) -> dict[str, dict]:
    """The interventions ``prism ablate`` measures, by name: each evaluation-time λ, the chosen stream
    (or each stream) silenced in every layer or layer by layer, and each chosen head zeroed."""
    attn = model.blocks[0].attn
    has_lambda = attn.own_lambda() is not None
    if lambdas and not has_lambda:
        raise PrismError(f"{model.config.attention} attention has no λ to set (--lambda is for prism and diff)")
    plan: dict[str, dict] = {}
    for lam in lambdas if lambdas is not None else ([0.0, 0.1, 1.0] if has_lambda and not heads else []):
        plan[f"λ = {lam:g}"] = {"lam": lam}
    streams = [stream] if stream else ([] if heads or lambdas else list(attn.stream_names))
    for s in streams:
        if per_layer:
            for layer in range(len(model.blocks)):
                plan[f"{s} off, layer {layer}"] = {"zero_streams": [s], "layers": [layer]}
        else:
            plan[f"{s} off"] = {"zero_streams": [s]}
    for layer, s, h in parse_heads(list(heads), model, stream):
        plan[f"head {layer}.{s}.{h} off"] = {"zero_heads": [(layer, s, h)]}
    return plan


def ablate(checkpoint, data=None, lambdas: list[float] | None = None, stream: str | None = None,
           heads: list[str] = (), per_layer: bool = False, max_windows: int = 32, device: str = "auto") -> dict:
    """Load a checkpoint, measure each planned intervention on its data (default: the data folder its
    run recorded) and return the rows of ``prism ablate``."""
    from prism_lm.checkpoint.model import open_on_data

    bounded_int(max_windows, "--max-windows", 1)
    model, directory, data = open_on_data(checkpoint, data, device)
    shards = ShardSet(data, "val")
    if len(shards) <= model.config.block_size:
        shards = ShardSet(data, "train")
    shards.check_fits(model.config.vocab_size)
    plan = ablation_plan(model, lambdas, stream, heads, per_layer)
    if not plan:
        raise PrismError("nothing to ablate: give --lambda, --stream or --heads")
    from prism_lm.run_dir import trained_on_bos

    out = intervention_effects(model, shards, plan, max_windows=max_windows, bos=trained_on_bos(directory))
    rows = [{"intervention": name, "edit": e["edit"], "loss": out["base"]["all"] + e["all_delta"],
             "all_delta": e["all_delta"], "recall_delta": e["recall_delta"], "other_delta": e["other_delta"],
             "by_kind": e["by_kind"], "by_distance": e["by_distance"], "support": e["support"]}
            for name, e in out["effects"].items()]
    return {"checkpoint": str(directory), "data": str(data), "split": shards.split, "windows": out["windows"],
            "tokens": out["tokens"], "recall_tokens": out["recall_tokens"], "base": out["base"],
            "lambda": model.blocks[0].attn.current_lambda().item() if model.blocks[0].attn.own_lambda() is not None
            else None, "rows": rows, "note": _defaults_note(model, lambdas, stream, heads)}


def _defaults_note(model: PrismLM, lambdas, stream, heads) -> str | None:
    """Said when the rows asked for replace the default ones (each stream off; λ 0, 0.1 and 1)."""
    if not (heads or lambdas) or stream:
        return None
    left = ["each stream off"] + (["λ = 0, 0.1 and 1"] if not lambdas and model.blocks[0].attn.own_lambda()
                                  is not None else [])
    return (f"the default rows ({' and '.join(left)}) are left out because --heads or --lambda chose the rows; "
            "add --stream NAME for a stream's row")


def write_ablation(result: dict, out_dir) -> dict[str, str]:
    """ablate.json, ablate.md and (with λ rows) the loss-against-λ figure in a new folder."""
    import json
    from pathlib import Path

    from prism_lm import render
    from prism_lm.analysis import figures

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise PrismError(f"--out {out} is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "ablate.json", "md": out / "ablate.md"}
    paths["json"].write_text(json.dumps(result, indent=1, default=list), encoding="utf-8")
    lam_rows = [r for r in result["rows"] if set(r["edit"]) == {"lam"}]
    lines = [f"# Interventions on {result['checkpoint']}", "",
             f"Loss change (intervened − unmodified, nats) on {result['tokens']:,} tokens of the "
             f"{result['split']} split of {result['data']} ({result['windows']} windows); recall tokens: "
             f"{result['recall_tokens']:,}. "
             f"Unmodified loss {result['base']['all']:.4f}" + (f" at the model's λ = {result['lambda']:.4g}."
                                                              if result["lambda"] is not None else "."), "",
             "Each change is a mean over tokens; beside it, a 95% Student-t interval over the windows (each window's "
             "own mean change) and the number of tokens it rests on.", "",
             *render.markdown_table(*table(result)), *(["", f"Note: {result['note']}."] if result["note"] else [])]
    if lam_rows:
        figure = figures.lambda_curve([r["edit"]["lam"] for r in lam_rows], [r["loss"] for r in lam_rows],
                                      result["lambda"], result["base"]["all"], out)
        paths["figure"] = figure
        lines += ["", f"![loss against evaluation-time λ]({figure.name})", "",
                  "Loss on all tokens with every layer's λ set to the value on the x axis at evaluation; the "
                  "marker is the model as trained."]
    paths["md"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {k: str(v) for k, v in paths.items()}


def table(result: dict) -> tuple[list[str], list[list]]:
    """The header and rows ``prism ablate`` prints: each change with its 95% interval over windows and,
    in parentheses, the tokens it rests on."""
    kinds = sorted({k for r in result["rows"] for k in r["by_kind"]})
    spans = list(dict.fromkeys(b for r in result["rows"] for b in r.get("by_distance", {})))
    groups = ["all", "recall", "other", *[f"recall: {k}" for k in kinds], *[f"recall at {b} tokens" for b in spans]]
    header = ["intervention", "loss", *[f"Δ {g} [95% CI] (tokens)" for g in groups]]

    def cell(r: dict, group: str) -> str:
        support = r["support"].get(group)
        if support is None:
            return "—"
        ci = support["ci95"]
        interval = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else " [one window]"
        return f"{support['delta']:+.4f}{interval} ({support['tokens']:,})"

    rows = [[r["intervention"], f"{r['loss']:.4f}", *[cell(r, g) for g in groups]] for r in result["rows"]]
    return header, rows
