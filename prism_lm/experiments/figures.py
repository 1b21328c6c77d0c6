"""The sweep report's figures: every run's train loss, the headline metrics per arm, the tuning curves
and the ladder. A committed table holds no runs' metrics, so its report keeps the loss figure drawn
from the runs; a pack continued elsewhere draws the runs trained there and says how many.
"""

from __future__ import annotations

from pathlib import Path

from prism_lm.experiments.sweep_dir import SweepDir
from prism_lm.stats import finite

# the columns every experiment's tables and figures show, besides the metrics its verdicts name
HEADLINE = ("val_loss_", "grad_norm_max", "grad_norm_mean", "clipped_fraction", "train_seconds")


def _kept_figure(committed: Path, out: Path) -> Path | None:
    """A committed table's training-curve figure (drawn from runs it no longer holds), copied to ``out``."""
    import shutil

    if not committed.is_file():
        return None
    target = out / committed.name
    if target.resolve() != committed.resolve():
        shutil.copyfile(committed, target)
    return target


def draw_figures(plan: dict, rows: list[dict], summary: dict, sweep: SweepDir, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    figs = {}
    for name, exp in plan["experiments"].items():
        colours = {g: plt.cm.tab10(i % 10) for i, g in enumerate(exp["groups"])}
        loss = _loss_figure(name, exp, colours, sweep, out)
        if loss:
            figs[f"{name}_loss"] = loss
        metrics = _metrics_figure(name, exp, summary["experiments"][name], rows, colours, out)
        if metrics:
            figs[f"{name}_metrics"] = metrics
        tuning = summary["experiments"][name].get("tuning")
        if tuning and any(p["mean"] is not None for c in tuning["curves"].values() for p in c.values()):
            figs[f"{name}_tuning"] = _tuning_figure(name, tuning, colours, out)
        ladder = summary["experiments"][name].get("ladder")
        if ladder:
            figs[f"{name}_ladder"] = _ladder_figure(name, ladder, out)
    return figs


def _loss_figure(name: str, exp: dict, colours: dict, sweep: SweepDir, out: Path) -> Path | None:
    """Every run's train loss, coloured by arm (a committed table keeps the figure drawn from its runs)."""
    import matplotlib.pyplot as plt

    from prism_lm.run_dir import read_metrics

    fig, ax = plt.subplots(figsize=(7, 4))
    labelled = set()
    for entry in exp["runs"]:
        metrics = sweep.run(entry["folder"]).train_run().metrics_path
        if not metrics.is_file():
            continue
        iters = [r for r in read_metrics(metrics) if r["type"] == "iter" and finite(r["train_loss"])]
        if iters:
            group = entry["group"]
            ax.plot([r["iter"] for r in iters], [r["train_loss"] for r in iters], color=colours[group],
                    alpha=0.6, lw=1, label=None if group in labelled else group)
            labelled.add(group)
    if not ax.lines:
        plt.close(fig)
        return _kept_figure(sweep.path / "figures" / f"{name}_loss.png", out)
    drawn, runs = len(ax.lines), len(exp["runs"])
    which = "every run" if drawn == runs else f"the {drawn} of {runs} runs whose metrics are here"
    ax.set(xlabel="step", ylabel="train loss (nats/token)", title=f"{name}: {which}, coloured by arm")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    return _save(fig, out / f"{name}_loss.png")


def _metrics_figure(name: str, exp: dict, summary: dict, rows: list[dict], colours: dict, out: Path) -> Path | None:
    """The headline metrics per arm: mean and 95% t interval over seeds, each seed a dot."""
    import matplotlib.pyplot as plt

    arms = summary["arms"]
    shown = [m for m in headline_metrics(arms, summary["verdicts"])
             if any(a["metrics"][m]["n"] for a in arms.values())]
    if not shown:
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], shown, strict=True):
        for i, g in enumerate(exp["groups"]):
            s = arms[g]["metrics"][metric]
            if s["mean"] is None:
                continue
            err = None if s["ci95"] is None else [[max(0.0, s["mean"] - s["ci95"][0])],
                                                 [max(0.0, s["ci95"][1] - s["mean"])]]
            ax.errorbar([i], [s["mean"]], yerr=err, fmt="o", color=colours[g], capsize=3)
            seeds = [r[metric] for r in rows if r["experiment"] == name and r["group"] == g and finite(r.get(metric))]
            ax.scatter([i] * len(seeds), seeds, s=8, color=colours[g], alpha=0.4)
        ax.set_xticks(range(len(exp["groups"])), exp["groups"], rotation=60, fontsize=6, ha="right")
        ax.set_title(metric, fontsize=7)
    fig.suptitle(f"{name}: mean and 95% t interval over seeds (dots: seeds)", fontsize=8)
    return _save(fig, out / f"{name}_metrics.png")


def _ladder_figure(name: str, ladder: dict, out: Path) -> Path:
    """The paired difference against tokens and against parameters, with its seed-level intervals."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ("tokens", "parameters"), strict=True):
        shown = [p for p in ladder["points"] if p[key] and p["difference"]["mean"] is not None]
        for p in shown:
            ci = p["difference"]["ci95"]
            err = None if ci is None else [[p["difference"]["mean"] - ci[0]], [ci[1] - p["difference"]["mean"]]]
            ax.errorbar([p[key]], [p["difference"]["mean"]], yerr=err, fmt="o", capsize=3, color="C0")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set(xlabel=key, ylabel=f"{ladder['metric']}: {ladder['arm']} − {ladder['baseline']}")
    fig.suptitle(f"{name}: the gap across scale (95% t intervals over seeds). {ladder['verdict']}", fontsize=8)
    return _save(fig, out / f"{name}_ladder.png")


def _tuning_figure(name: str, tuning: dict, colours: dict, out: Path) -> Path:
    """Each arm's tuning metric against its tuning points, the chosen one ringed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for arm, curve in tuning["curves"].items():
        points = [p for p in curve.values() if p["mean"] is not None]  # tuning runs not finished yet are left out
        if not points:
            continue
        xs = list(range(len(points)))
        ax.errorbar(xs, [p["mean"] for p in points], fmt="o-", color=colours.get(arm), label=arm, capsize=3,
                    yerr=[[p["mean"] - p["ci95"][0] if p["ci95"] else 0 for p in points],
                          [p["ci95"][1] - p["mean"] if p["ci95"] else 0 for p in points]])
        for x, p in zip(xs, points, strict=True):
            if tuning["chosen"] and tuning["chosen"].get(arm) == p["point"]:
                ax.scatter([x], [p["mean"]], s=160, facecolors="none", edgecolors=colours.get(arm))
        ax.set_xticks(xs, [", ".join(f"{v}" for v in p["point"].values()) for p in points], fontsize=7)
    ax.set(xlabel=", ".join(tuning["grid"]), ylabel=f"{tuning['metric']} (held-out train)",
           title=f"{name}: tuning curves (chosen point ringed)")
    ax.legend(fontsize=7)
    return _save(fig, out / f"{name}_tuning.png")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def headline_metrics(arms: dict, verdicts: list[dict] = (), gates: list[dict] = ()) -> list[str]:
    """The verdicts' metrics, the gates', then HEADLINE's that any arm measured."""
    names = next(iter(arms.values()))["metrics"].keys()
    named = list(dict.fromkeys(v["metric"] for v in (*verdicts, *gates) if v["metric"] in names))
    return named + [m for m in names if m not in named
                    and any(m == h or (h.endswith("_") and m.startswith(h)) for h in HEADLINE)]
