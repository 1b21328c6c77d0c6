"""``prism sweep report``: one row per run, seed-level intervals, paired differences, verdicts, plots.

Statistics (stated in every report):
- A run is one sample. An arm's interval is the 95% Student-t interval of the mean over its seeds
  (n - 1 degrees of freedom); with one seed there is no interval.
- Arms that share seeds are compared **paired**: the per-seed difference arm minus baseline, with
  the t interval of its mean. A verdict reads that interval: entirely on the claimed side
  ("better": lower or higher) is *supported*, entirely on the other side *contradicted*, otherwise
  *inconclusive at this scale*. A verdict without a baseline compares the arm's values with ``null``.
- Head-stream differences also get a hierarchical bootstrap (seeds, then heads within layers),
  ``stats.hierarchical_bootstrap_diff``, beside the t interval over per-seed differences.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

from prism_lm import render
from prism_lm.errors import PrismError
from prism_lm.experiments.sweep_dir import SweepDir
from prism_lm.stats import finite, hierarchical_bootstrap_diff, mean_interval, paired_difference

INTERVAL_METHOD = "95% Student-t interval of the mean over seeds (each run one sample, n - 1 degrees of freedom)"
PAIRED_METHOD = "per-seed differences over the seeds both arms ran, 95% Student-t interval of their mean"
# the columns every experiment's tables show, besides the metrics its verdicts name (the rest: CSV/JSON)
HEADLINE = ("val_loss_", "grad_norm_max", "grad_norm_mean", "clipped_fraction", "diverged", "train_seconds")


def decide(interval: dict, better: str, null: float = 0.0) -> str:
    ci = interval.get("ci95")
    if ci is None:
        return "inconclusive (no interval: fewer than two seeds)"
    lo, hi = ci[0] - null, ci[1] - null
    good_side = hi < 0 if better == "lower" else lo > 0
    bad_side = lo > 0 if better == "lower" else hi < 0
    return "supported" if good_side else "contradicted" if bad_side else "inconclusive at this scale"


def collect(sweep: SweepDir) -> tuple[dict, list[dict], dict[str, dict]]:
    """The plan, one row per (experiment, planned run) with a result (rows carry the plan's labels),
    and each run folder's result, read once (a run shared by experiments is read once)."""
    plan = sweep.read_plan()
    folders = {entry["folder"] for exp in plan["experiments"].values() for entry in exp["runs"]}
    results = {f: r for f in sorted(folders) if (r := sweep.run(f).read_result()) is not None}
    rows = []
    for name, exp in plan["experiments"].items():
        for entry in exp["runs"]:
            result = results.get(entry["folder"])
            if result is None:
                continue
            row = {k: v for k, v in result["row"].items() if k not in ("experiment", "arm", "group", "seed")}
            rows.append({"experiment": name, "arm": entry["arm"], "group": entry["group"], "seed": entry["seed"],
                         **entry["grid"], **row})
    return plan, rows, results


def summarise(plan: dict, rows: list[dict], results: dict[str, dict]) -> dict:
    out = {"interval": INTERVAL_METHOD, "paired": PAIRED_METHOD, "experiments": {}}
    for name, exp in plan["experiments"].items():
        mine = [r for r in rows if r["experiment"] == name]
        metrics = sorted({k for r in mine for k, v in r.items() if finite(v) or isinstance(v, bool)}
                         - {"seed", "steps", "logged_steps"} - set().union(*(set(r["grid"]) for r in exp["runs"])))
        by_group = {g: {m: {r["seed"]: float(r[m]) for r in mine if r["group"] == g and m in r
                            and (finite(r[m]) or isinstance(r[m], bool))} for m in metrics} for g in exp["groups"]}
        arms = {g: {"runs": sum(1 for r in mine if r["group"] == g),
                    "planned": sum(1 for e in exp["runs"] if e["group"] == g),
                    "metrics": {m: mean_interval(list(by_group[g][m].values())) for m in metrics}}
                for g in exp["groups"]}
        reference = exp["groups"][0]
        paired = {g: {m: paired_difference(by_group[g][m], by_group[reference][m]) for m in metrics}
                  for g in exp["groups"][1:]}
        verdicts = []
        for v in exp["verdicts"]:
            a = by_group[v["arm"]].get(v["metric"], {})
            if v["baseline"]:
                interval = paired_difference(a, by_group[v["baseline"]].get(v["metric"], {}))
                verdict = decide(interval, v["better"])
            else:
                interval = mean_interval(list(a.values()))
                verdict = decide(interval, v["better"], v["null"])
            if interval["n"] == 0:
                verdict = f"not measured (no run has {v['metric']})"
            verdicts.append({**v, "interval": interval, "verdict": verdict})
        out["experiments"][name] = {"description": exp["description"], "file": exp["file"],
                                    "reference_arm": reference, "arms": arms, "paired_vs_reference": paired,
                                    "verdicts": verdicts, "streams": _stream_bootstraps(exp, results)}
    return out


def _stream_bootstraps(exp: dict, results: dict[str, dict]) -> dict:
    """Per arm: first-minus-second stream of median lag and mass beyond far, hierarchical over seeds."""
    out = {}
    for group in exp["groups"]:
        mine = [results[e["folder"]] for e in exp["runs"] if e["group"] == group and e["folder"] in results]
        for which in ("heads", "heads_init"):
            runs = [r["heads"][which] for r in mine if r["heads"].get(which)]
            streams = list(dict.fromkeys(e["stream"] for e in runs[0])) if runs else []
            if len(streams) < 2:
                continue
            for metric in ("median_lag", "mass_beyond_far"):
                if metric in runs[0][0]:
                    key = f"{group} {'untrained' if which == 'heads_init' else 'trained'} {metric}"
                    out[key] = {"a": streams[0], "b": streams[1],
                                **hierarchical_bootstrap_diff(runs, metric, streams[0], streams[1])}
    return out


def write_report(sweep: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    sweep = SweepDir(sweep)
    out = Path(out) if out is not None else sweep.report_dir
    plan, rows, results = collect(sweep)
    if not rows:
        raise PrismError(f"{sweep.path} holds no finished runs yet (run prism sweep run first)")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "parquet": out / "results.parquet", "json": out / "report.json",
             "md": out / "report.md", "html": out / "report.html"}
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    _write_parquet(rows, columns, paths["parquet"])
    summary = summarise(plan, rows, results)
    figures = _figures(plan, rows, summary, sweep, out / "figures")
    summary["figures"] = {k: str(v.relative_to(out)) for k, v in figures.items()}
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    paths["md"].write_text(_markdown(summary, rows), encoding="utf-8")
    paths["html"].write_text(_html(summary, rows, out), encoding="utf-8")
    return paths


def _write_parquet(rows: list[dict], columns: list[str], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = {c: [r.get(c) for r in rows] for c in columns}
    for c, values in table.items():  # one type per column: numbers stay numbers, anything mixed becomes text
        kinds = {type(v) for v in values if v is not None}
        if len(kinds) > 1 and not kinds <= {int, float}:
            table[c] = [None if v is None else str(v) for v in values]
        elif kinds == {int, float}:
            table[c] = [None if v is None else float(v) for v in values]
    pq.write_table(pa.table(table), path)


def _figures(plan: dict, rows: list[dict], summary: dict, sweep: SweepDir, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prism_lm.train.metrics import read_metrics

    out.mkdir(parents=True, exist_ok=True)
    figs = {}
    for name, exp in plan["experiments"].items():
        colours = {g: plt.cm.tab10(i % 10) for i, g in enumerate(exp["groups"])}
        fig, ax = plt.subplots(figsize=(7, 4))
        for entry in exp["runs"]:
            metrics = sweep.run(entry["folder"]).train_run().metrics_path
            if not metrics.is_file():
                continue
            iters = [r for r in read_metrics(metrics) if r["type"] == "iter" and finite(r["train_loss"])]
            if iters:
                ax.plot([r["iter"] for r in iters], [r["train_loss"] for r in iters], color=colours[entry["group"]],
                        alpha=0.6, lw=1, label=entry["group"] if entry["seed"] == exp["seeds"][0] else None)
        ax.set(xlabel="step", ylabel="train loss (nats/token)", title=f"{name}: every run, coloured by arm")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        figs[f"{name}_loss"] = _save(fig, out / f"{name}_loss.png")
        arms = summary["experiments"][name]["arms"]
        shown = [m for m in _headline_metrics(arms, summary["experiments"][name]["verdicts"])
                 if any(a["metrics"][m]["n"] for a in arms.values())]
        if shown:
            fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 3.2), squeeze=False)
            for ax, metric in zip(axes[0], shown, strict=True):
                for i, g in enumerate(exp["groups"]):
                    s = arms[g]["metrics"][metric]
                    if s["mean"] is None:
                        continue
                    err = None if s["ci95"] is None else [[s["mean"] - s["ci95"][0]], [s["ci95"][1] - s["mean"]]]
                    ax.errorbar([i], [s["mean"]], yerr=err, fmt="o", color=colours[g], capsize=3)
                    seeds = [r[metric] for r in rows if r["experiment"] == name and r["group"] == g
                             and finite(r.get(metric))]
                    ax.scatter([i] * len(seeds), seeds, s=8, color=colours[g], alpha=0.4)
                ax.set_xticks(range(len(exp["groups"])), exp["groups"], rotation=60, fontsize=6, ha="right")
                ax.set_title(metric, fontsize=7)
            fig.suptitle(f"{name}: mean and 95% t interval over seeds (dots: seeds)", fontsize=8)
            figs[f"{name}_metrics"] = _save(fig, out / f"{name}_metrics.png")
    return figs


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _headline_metrics(arms: dict, verdicts: list[dict] = ()) -> list[str]:
    """The verdicts' metrics, then HEADLINE's that any arm measured."""
    names = next(iter(arms.values()))["metrics"].keys()
    named = list(dict.fromkeys(v["metric"] for v in verdicts if v["metric"] in names))
    return named + [m for m in names if m not in named
                    and any(m == h or (h.endswith("_") and m.startswith(h)) for h in HEADLINE)]


def _fmt(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _cell(s: dict) -> str:
    if s["mean"] is None:
        return "–"
    ci = "" if s["ci95"] is None else f" [{s['ci95'][0]:.3g}, {s['ci95'][1]:.3g}]"
    return f"{s['mean']:.4g}{ci} (n={s['n']})"


def _tables(summary: dict, rows: list[dict]) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(experiment, title, header, rows) for every table of the report."""
    out = []
    for name, e in summary["experiments"].items():
        metrics = _headline_metrics(e["arms"], e["verdicts"])
        out.append((name, "Verdicts", ["claim", "metric", "arm", "baseline", "difference [95% CI]", "verdict"],
                    [[v["claim"], v["metric"], v["arm"], v["baseline"] or f"null = {v['null']}",
                      _cell(v["interval"]), v["verdict"]] for v in e["verdicts"]]))
        out.append((name, f"Arms (mean [{INTERVAL_METHOD}]; every column is in results.csv and report.json)",
                    ["arm", "runs", *metrics],
                    [[g, f"{a['runs']}/{a['planned']}", *[_cell(a["metrics"][m]) for m in metrics]]
                     for g, a in e["arms"].items()]))
        out.append((name, f"Paired differences against {e['reference_arm']} ({PAIRED_METHOD})", ["arm", *metrics],
                    [[g, *[_cell(d[m]) for m in metrics]] for g, d in e["paired_vs_reference"].items()]))
        if e["streams"]:
            out.append((name, "Stream differences (first minus second stream; hierarchical bootstrap: seeds, then "
                              "heads within layers)", ["arm, model, metric", "streams", "difference", "95% CI", "runs"],
                        [[k, f"{s['a']} − {s['b']}", _fmt(s["diff"]), f"[{s['ci95'][0]:.3g}, {s['ci95'][1]:.3g}]",
                          str(s["runs"])] for k, s in e["streams"].items()]))
        cols = ["arm", "seed", "diverged", *[m for m in metrics if m != "diverged"]]
        out.append((name, "Runs", cols, [[_fmt(r.get(c)) for c in cols] for r in rows if r["experiment"] == name]))
    return out


def _markdown(summary: dict, rows: list[dict]) -> str:
    lines = ["# Sweep report", "", f"Intervals: {INTERVAL_METHOD}. Paired: {PAIRED_METHOD}.", ""]
    current = None
    for name, title, header, body in _tables(summary, rows):
        if name != current:
            e = summary["experiments"][name]
            lines += [f"## {name}", "", e["description"] or "", f"File: `{e['file']}`", ""]
            for key in (f"{name}_loss", f"{name}_metrics"):
                if key in summary["figures"]:
                    lines += [f"![{key}]({summary['figures'][key]})", ""]
            current = name
        lines += [f"### {title}", "", *render.markdown_table(header, body), ""]
    return "\n".join(lines)


def _html(summary: dict, rows: list[dict], out: Path) -> str:
    parts = ["<h1>Sweep report</h1>", f"<p>Intervals: {html.escape(INTERVAL_METHOD)}. "
             f"Paired: {html.escape(PAIRED_METHOD)}.</p>"]
    current = None
    for name, title, header, body in _tables(summary, rows):
        if name != current:
            e = summary["experiments"][name]
            parts.append(f"<h2>{html.escape(name)}</h2><p>{html.escape(e['description'] or '')}</p>")
            parts += [render.html_image(out / summary["figures"][key], key)
                      for key in (f"{name}_loss", f"{name}_metrics") if key in summary["figures"]]
            current = name
        parts += [f"<h3>{html.escape(title)}</h3>", render.html_table(header, body)]
    return render.html_page("Sweep report", parts)
