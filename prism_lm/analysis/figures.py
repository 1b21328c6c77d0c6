"""Figures (matplotlib, Agg): each function draws one figure and saves it as PNG and PDF.

Every function returns the PNG path. Nothing is hard-coded: reference lines on the loss plot are
given by the caller as (label, value) pairs.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "figure.dpi": 110})


def _save(fig, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png")
    fig.savefig(out / f"{name}.pdf")
    plt.close(fig)
    return out / f"{name}.png"


def loss_curves(records: list[dict], out: Path, references: list[tuple[str, float]] = ()) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4))
    it = [r for r in records if r["type"] == "iter"]
    ev = [r for r in records if r["type"] == "eval"]
    ax.plot([r["iter"] for r in it], [r["train_loss"] for r in it], lw=1, alpha=0.8, label="train (per step)")
    if ev:
        ax.plot([r["iter"] for r in ev], [r["val_loss"] for r in ev], "o-", label="val")
    for i, (label, value) in enumerate(references):
        ax.axhline(value, ls="--", lw=1, color=f"C{i + 2}", label=f"{label} ({value:g})")
    ax.set(xlabel="iteration", ylabel="loss (nats/token)", title="Loss")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, out, "loss_curves")


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    if len(x) < window:
        return x
    kernel = np.ones(window) / window
    head = np.cumsum(x[: window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(x, kernel, mode="valid")])


def grad_norm_and_lambda(records: list[dict], out: Path, window: int = 20) -> Path:
    it = [r for r in records if r["type"] == "iter"]
    steps = np.array([r["iter"] for r in it])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    g = np.array([r["grad_norm"] for r in it], dtype=float)
    a.plot(steps, g, lw=0.8, alpha=0.5, label="grad norm (before clipping)")
    a.plot(steps, moving_average(g, window), lw=1.5, label=f"moving average ({window})")
    a.set(xlabel="iteration", ylabel="global L2 norm", title="Gradient norm")
    a.legend()
    lam = [r.get("prism_lambda") for r in it]
    if any(v is not None for v in lam):
        b.plot(steps, [np.nan if v is None else v for v in lam])
        b.set(xlabel="iteration", ylabel="λ", title="λ schedule (mean over layers)")
    else:
        b.text(0.5, 0.5, "no λ in this model", ha="center", va="center")
        b.set_axis_off()
    return _save(fig, out, "grad_norm_lambda")


def stream_maps(maps: dict[str, np.ndarray], labels: list[str], query: int, out: Path, title: str) -> Path:
    """One head's map per stream side by side (T x T), token labels, the query row highlighted."""
    fig, axes = plt.subplots(1, len(maps), figsize=(5.2 * len(maps) + 0.6, 5.4), squeeze=False)
    for ax, (stream, A) in zip(axes[0], maps.items(), strict=True):
        im = ax.imshow(A, cmap="viridis", vmin=0, vmax=max(float(A.max()), 1e-6))
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.add_patch(plt.Rectangle((-0.5, query - 0.5), len(labels), 1, fill=False, ec="red", lw=1.5))
        ax.set(title=f"{stream}", xlabel="key", ylabel="query")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title)
    return _save(fig, out, "head_maps")


def target_grid(rows: np.ndarray, labels: list[str], target: int, stream: str, layer: int, out: Path) -> Path:
    """rows (H, T): each head's attention from the target token over earlier tokens."""
    H = rows.shape[0]
    cols = min(4, H)
    nrows = (H + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.6 * nrows), squeeze=False)
    keys = list(range(target + 1))
    top = min(1.0, 1.15 * float(rows[:, : target + 1].max())) or 1.0  # one shared axis, fitted to the bars
    for h in range(nrows * cols):
        ax = axes[h // cols][h % cols]
        if h >= H:
            ax.set_axis_off()
            continue
        ax.bar(keys, rows[h, : target + 1], color="C0")
        ax.set_xticks(keys, labels[: target + 1], rotation=90, fontsize=6)
        ax.set(title=f"{stream} head {h}", ylim=(0, top))
    fig.suptitle(f"Where layer {layer}'s {stream} heads look from {labels[target]!r} "
                 "(attention weight per earlier token)")
    return _save(fig, out, "target_grid")


def resonance(table: dict, out: Path) -> Path:
    """Left: the first-order cross-kernel against m; right: the closest matched-pair approach to
    resonance against m (log scale; exact resonances drawn at the floor). The named multipliers are
    marked and labelled, each label moved up until it overlaps none before it (pi, 355/113, 22/7 and
    sqrt10 lie within 0.03 of each other)."""
    fig, (ax, right) = plt.subplots(1, 2, figsize=(11, 4))
    floor = 1e-9
    for w, ys in table["sweep"].items():
        ax.plot(table["sweep_m"], ys, label=f"window {w}")
    for w, ys in table["sweep_gap"].items():
        right.plot(table["sweep_m"], [floor if g is None or g < floor else g for g in ys], label=f"window {w}")
    first, scaling = str(table["windows"][0]), table["rope_scaling"]
    marks: dict = {ax: [], right: []}
    for name, value in sorted(table["named_values"].items(), key=lambda item: item[1]):
        if 1.0 <= value <= 4.0:
            row = table["named"][scaling][name][first]
            gap = row["closest_matched"]["gap"]
            for axis, y in ((ax, row["matched"]), (right, floor if gap is None or gap < floor else gap)):
                axis.plot([value], [y], "k.", ms=6)
                marks[axis].append((value, y, name))
    ax.set(xlabel="frequency multiplier m", ylabel="mean |K_SN| (matched pairs)",
           title=f"First-order cross-kernel (D = {table['head_dim']}, {scaling} scaling)")
    right.set(xlabel="frequency multiplier m", ylabel="smallest |n ω_s − k ω_n| (rad/token)", yscale="log",
              title=f"Closest approach to resonance, n, k ≤ {table['max_order']} (floor = exact)")
    for axis in (ax, right):
        axis.legend()
        axis.grid(alpha=0.3)
    fig.tight_layout()  # the layout _save gives, before the labels are measured against each other
    for axis in (ax, right):
        _labels_apart(fig, axis, marks[axis])
    return _save(fig, out, "resonance")


def _labels_apart(fig, axis, marks: list[tuple[float, float, str]], step: float = 11.0, tries: int = 12) -> None:
    """Label each (x, y, text), moving a label up by ``step`` points until its words overlap no label
    placed before it; a moved label keeps a thin line to its point."""
    from matplotlib.text import Text

    axis.autoscale_view()
    renderer = fig.canvas.get_renderer()
    placed = []
    for x, y, text in marks:
        for k in range(tries):
            note = axis.annotate(text, (x, y), fontsize=8, xytext=(3, 4 + step * k), textcoords="offset points",
                                 arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if k else None)
            note.set_in_layout(False)  # the layout stays the one the labels were measured in
            note.update_positions(renderer)  # an annotation finds where it stands only when drawn
            box = Text.get_window_extent(note, renderer)
            if not any(box.overlaps(other) for other in placed) or k == tries - 1:
                break
            note.remove()
        placed.append(box)


def lambda_curve(lams: list[float], losses: list[float], model_lambda: float | None, model_loss: float,
                 out: Path) -> Path:
    """Loss on all tokens against the evaluation-time λ, with the trained model's own point."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    order = np.argsort(lams)
    ax.plot(np.asarray(lams)[order], np.asarray(losses)[order], "o-", label="λ set at evaluation")
    if model_lambda is not None:
        ax.plot([model_lambda], [model_loss], "k*", ms=12, label=f"as trained (λ = {model_lambda:.3g})")
    ax.set(xlabel="evaluation-time λ (every layer)", ylabel="loss (nats/token)",
           title="Loss against the weight of the subtracted stream")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, out, "loss_vs_lambda")


HEAD_METRIC_TITLES = {"mean_distance": "How far back each head attends (mean distance, tokens)",
                      "mass_within_8": "How much of each head's attention stays within 8 tokens",
                      "antecedent_hit_rate": "How much attention each head puts on the word a recall refers back to"}


def head_metrics(heads: list[dict], metric: str, out: Path, null: float | None = None,
                 null_label: str = "") -> Path:
    """One dot per head, by layer and stream; ``null`` a horizontal line (what no selectivity gives),
    and each head's own lag-matched null (``antecedent_lag_null``) as an open marker where it exists."""
    streams = list(dict.fromkeys(e["stream"] for e in heads))
    layers = sorted({e["layer"] for e in heads})
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for k, s in enumerate(streams):
        for layer in layers:
            rows = [e for e in heads if e["stream"] == s and e["layer"] == layer]
            ys = [e[metric] for e in rows]
            xs = np.full(len(ys), layer) + (k - (len(streams) - 1) / 2) * 0.25
            ax.scatter(xs, ys, color=f"C{k}", s=18, label=s if layer == layers[0] else None)
            if metric == "antecedent_hit_rate" and rows and "antecedent_lag_null" in rows[0]:
                ax.scatter(xs + 0.08, [e["antecedent_lag_null"] for e in rows], facecolors="none",
                           edgecolors=f"C{k}", s=18, label=f"{s}: its lag-matched null" if layer == layers[0] else None)
    if null is not None:
        ax.axhline(null, color="0.3", ls="--", lw=1, label=null_label or "null")
    ax.set(xlabel="layer", ylabel=metric.replace("_", " "),
           title=HEAD_METRIC_TITLES.get(metric, f"{metric.replace('_', ' ')} per head"))
    ax.set_xticks(layers)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, out, f"heads_{metric}")


def coding_rates(by_step: dict[int, list[dict]], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, (step, rows) in enumerate(sorted(by_step.items())):
        layers = [r["layer"] for r in rows]
        ax.plot(layers, [r["R"] for r in rows], "o-", color=f"C{i}", label=f"R(Z), step {step}")
        if "delta_R" in rows[0]:
            ax.plot(layers, [r["delta_R"] for r in rows], "s--", color=f"C{i}", label=f"ΔR, step {step}")
    ax.set(xlabel="layer", ylabel="nats", title="Coding rate of each attention layer's input")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out, "coding_rate")
