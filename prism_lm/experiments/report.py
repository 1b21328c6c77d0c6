"""``prism sweep report``: one row per run, seed-level intervals, paired differences, verdicts, plots.

Statistics (stated in every report):
- A run is one sample. An arm's interval is the 95% Student-t interval of the mean over its seeds
  (n - 1 degrees of freedom); fractions in [0, 1] get the same interval on the logit scale, so it
  stays inside (0, 1); with one seed there is no interval. Each arm's divergence rate comes with an
  exact binomial interval.
- Arms that share seeds are compared **paired**: the per-seed difference, always arm − baseline
  (the sign convention of every table, printed in its header), with the t interval of its mean.
- Verdicts follow ``verdicts.py``: one pre-registered primary per claim tested alone, exploratory
  verdicts Holm-adjusted among themselves, one interval rule for equivalence both ways, the minimum
  detectable difference beside each, no decision below ``min_seeds`` seeds.
- Head-stream differences (first stream − second) are decided from the t interval of per-seed
  differences; the hierarchical bootstrap (seeds, then heads within layers,
  ``stats.hierarchical_bootstrap_diff``) sits beside it, labelled optimistic at few seeds.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

from prism_lm import render
from prism_lm.errors import PrismError
from prism_lm.experiments.columns import bounded, column_words
from prism_lm.experiments.figures import draw_figures, headline_metrics
from prism_lm.experiments.job import FAILURE_RULE, is_failure
from prism_lm.experiments.ladder import summarise_ladder
from prism_lm.experiments.spec import tuned_group
from prism_lm.experiments.sweep_dir import SweepDir, planned_folders
from prism_lm.experiments.verdicts import DECISION_WORDS, VERDICT_RULES, family, gate_results, interval_words
from prism_lm.stats import (
    BOUNDED_METHOD,
    T_METHOD,
    binomial_interval,
    bounded_mean_interval,
    critical_level,
    finite,
    hierarchical_bootstrap_diff,
    mean_interval,
    paired_difference,
)

INTERVAL_METHOD = T_METHOD
PAIRED_METHOD = "arm − baseline per seed, over the seeds both arms ran; 95% Student-t interval of their mean"

def collect(sweep: SweepDir) -> tuple[dict, list[dict], dict[str, dict]]:
    """The plan, one row per (experiment, planned run) with a result (rows carry the plan's labels),
    and each run folder's result, read once (a run shared by experiments is read once)."""
    plan = sweep.read_plan()
    results = {f: r for f in planned_folders(plan) if (r := sweep.run(f).read_result()) is not None}
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
    out = {"interval": INTERVAL_METHOD, "bounded": BOUNDED_METHOD, "paired": PAIRED_METHOD,
           "verdict_rules": VERDICT_RULES, "experiments": {}}
    for name, exp in plan["experiments"].items():
        mine = [r for r in rows if r["experiment"] == name]
        metrics = sorted({k for r in mine for k, v in r.items() if finite(v) or isinstance(v, bool)}
                         - {"seed", "steps", "logged_steps"} - set().union(*(set(r["grid"]) for r in exp["runs"])))
        by_group = {g: {m: {r["seed"]: float(r[m]) for r in mine if r["group"] == g and m in r
                            and (finite(r[m]) or isinstance(r[m], bool))} for m in metrics} for g in exp["groups"]}
        diverged = {g: sorted(r["seed"] for r in mine if r["group"] == g and r.get("diverged")) for g in exp["groups"]}
        arms = {g: _arm(g, mine, exp, by_group[g], metrics) for g in exp["groups"]}
        reference = exp["groups"][0]
        paired = {g: {m: paired_difference(by_group[g][m], by_group[reference][m]) for m in metrics}
                  for g in exp["groups"][1:]}
        min_seeds = exp.get("min_seeds", 5)
        gates = gate_results(exp.get("gates", []), by_group)
        out["experiments"][name] = {"description": exp["description"], "file": exp["file"], "min_seeds": min_seeds,
                                    "reference_arm": reference, "arms": arms, "paired_vs_reference": paired,
                                    "gates": gates, "verdicts": family(exp["verdicts"], by_group, diverged, min_seeds,
                                                                       gates),
                                    "streams": _stream_bootstraps(exp, results, by_group),
                                    "tuning": _tuning(exp, results), "stability": _stability(exp, mine),
                                    "ladder": summarise_ladder(exp, by_group)}
    return out


def _stability(exp: dict, rows: list[dict]) -> dict | None:
    """With a learning-rate grid: each arm's failure rate (``job.FAILURE_RULE``, applied to each row
    by ``is_failure`` where the row holds its loss and unigram entropy, so older rows are judged by
    today's rule) per lr with its exact binomial interval, and its critical lr with a bootstrap interval."""
    if not any("optim.lr" in e["grid"] for e in exp["runs"]):
        return None
    context = (exp.get("evaluate", {}).get("contexts") or [None])[-1]
    out = {}
    for arm in dict.fromkeys(e["arm"] for e in exp["runs"]):
        outcomes: dict[float, list[bool]] = {}
        for r in rows:
            if r["arm"] == arm and "optim.lr" in r and "failed" in r:
                outcomes.setdefault(float(r["optim.lr"]), []).append(_failed(r, context))
        if outcomes:
            out[arm] = {"failure_by_lr": {lr: binomial_interval(sum(v), len(v)) for lr, v in sorted(outcomes.items())},
                        **critical_level(outcomes)}
    return out or None


def _failed(row: dict, context: int | None) -> bool:
    loss = row.get(f"val_loss_{context}") if context else None
    if loss is None or row.get("unigram_entropy") is None:
        return bool(row["failed"])  # a row without its numbers keeps the rule it was written with
    return is_failure(bool(row.get("diverged")), loss, row["unigram_entropy"])


def _tuning(exp: dict, results: dict[str, dict]) -> dict | None:
    """Each verdict group's tuning curve (the metric's mean and t interval over the tuning seeds at each
    tuning point, on the held-out part of train) and its chosen point: one curve per arm, or per arm
    and ladder point when the file tunes at each."""
    tune = exp.get("tune")
    if not tune:
        return None
    curves: dict[str, dict[str, dict]] = {}
    for entry in tune["runs"]:
        row = results.get(entry["folder"], {}).get("row", {})
        point = curves.setdefault(tuned_group(entry["group"]), {}).setdefault(
            entry["group"], {"point": entry["grid"], "values": []})
        if finite(row.get(tune["metric"])):
            point["values"].append(row[tune["metric"]])
    for arm_curve in curves.values():
        for point in arm_curve.values():
            point.update(mean_interval(point.pop("values")))
    return {"metric": tune["metric"], "holdout": tune["holdout"], "seeds": tune["seeds"], "grid": tune["grid"],
            "chosen": tune.get("chosen"), "curves": curves}


def _arm(group: str, rows: list[dict], exp: dict, values: dict[str, dict], metrics: list[str]) -> dict:
    """An arm's runs, its divergence rate and every metric's mean with its interval."""
    mine = [r for r in rows if r["group"] == group]
    return {"runs": len(mine), "planned": sum(1 for e in exp["runs"] if e["group"] == group),
            "divergence": binomial_interval(sum(bool(r.get("diverged")) for r in mine), len(mine)),
            "metrics": {m: (bounded_mean_interval if bounded(m) else mean_interval)(list(values[m].values()))
                        for m in metrics}}


def _stream_bootstraps(exp: dict, results: dict[str, dict], by_group: dict) -> dict:
    """Per arm: first-minus-second stream of median lag and mass beyond far, as the t interval of the
    per-seed differences and as the hierarchical bootstrap (seeds, then heads within layers)."""
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
                    column = f"{'init_' if which == 'heads_init' else ''}stream_diff_{metric}"
                    out[key] = {"a": streams[0], "b": streams[1],
                                "seed_level": mean_interval(list(by_group[group].get(column, {}).values())),
                                **hierarchical_bootstrap_diff(runs, metric, streams[0], streams[1])}
    return out


def read_results_csv(path: str | Path) -> list[dict]:
    """The rows of a results.csv with their types back (numbers, booleans, empty cells as None), so
    that ``summarise(plan, rows, {})`` recomputes every verdict from a committed table and its plan."""
    def value(text: str):
        if text == "":
            return None
        if text in ("True", "False"):
            return text == "True"
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    with open(path, newline="", encoding="utf-8") as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def write_report(sweep: str | Path, out: str | Path | None = None, overwrite: bool = False) -> dict[str, Path]:
    """The sweep's tables, report and figures in ``out`` (None: the sweep's own report/ folder, rewritten
    each time). A given ``out`` that already holds files is refused unless ``overwrite``. A folder that
    holds a plan (sweep.json) and a results.csv but no runs (a committed table) is reported from its
    table: every verdict recomputed by today's rules, the parts that need the runs (stream bootstraps,
    tuning curves) kept from its committed report.json, and so is its training-curve figure."""
    sweep = SweepDir(sweep)
    if out is not None and Path(out).is_dir() and any(Path(out).iterdir()) and not overwrite:
        raise PrismError(f"--out {out} already holds files; choose a new folder or pass --overwrite")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise PrismError(f"--out {out} exists and is a file; choose a new folder")
    out = Path(out) if out is not None else sweep.report_dir
    plan, rows, results = collect(sweep)
    from_table = not results and (sweep.path / "results.csv").is_file()
    if from_table:  # a committed table: its plan and rows, no runs
        rows = read_results_csv(sweep.path / "results.csv")
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
    if from_table:
        _keep_run_parts(summary, sweep.path / "report.json")
    figures = draw_figures(plan, rows, summary, sweep, out / "figures")
    summary["figures"] = {k: str(v.relative_to(out)) for k, v in figures.items()}
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    paths["md"].write_text(_markdown(summary, rows), encoding="utf-8")
    paths["html"].write_text(_html(summary, rows, out), encoding="utf-8")
    return paths


RUN_PARTS = ("streams", "tuning")  # computed from the run folders' results, which a table does not hold


def _keep_run_parts(summary: dict, committed: Path) -> None:
    """A table's recomputed summary keeps the parts its committed report computed from the runs."""
    if not committed.is_file():
        return
    old = json.loads(committed.read_text(encoding="utf-8"))["experiments"]
    for name, e in summary["experiments"].items():
        for part in RUN_PARTS:
            if not _measured(part, e.get(part)) and _measured(part, old.get(name, {}).get(part)):
                e[part] = old[name][part]


def _measured(part: str, value: dict | None) -> bool:
    """Whether a run part holds numbers: stream bootstraps at all, tuning curves with a measured point
    (a table's recomputed tuning has the plan's points and choice, but no runs to measure them)."""
    if not value:
        return False
    if part == "tuning":
        return any(point["n"] for curve in value["curves"].values() for point in curve.values())
    return True


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


def _p(x) -> str:
    return "–" if x is None else f"{x:.3g}"


GATES_TITLE = ("Gates: the positive controls of this claim (95% t interval over seeds; a failed gate makes every "
               "verdict 'untestable in this regime')")


def _gate_row(g: dict) -> list[str]:
    arms = "; ".join(f"{a} {interval_words(iv)}" for a, iv in g["values"].items())
    return [g["name"], g["condition"], arms, "yes" if g["passed"] else "no"]


def _verdict_table(e: dict) -> tuple[str, list[str], list[list[str]]]:
    explored = next((v["family_size"] for v in e["verdicts"] if not v["primary"]), 0)
    title = (f"Verdicts (sign: arm − baseline, or the arm's mean − the null; interval: 95% Student-t of the mean "
             f"per-seed difference; the primary's p is its own (tested alone at 0.05); the exploratory p are "
             f"Holm-adjusted over the {explored} tested exploratory verdicts; at least {e['min_seeds']} paired "
             f"seeds decide; MDE: the smallest difference these seeds detect with 80% power at the observed spread)")
    header = ["", "claim", "metric", "test", "arm − baseline", "difference [95% CI]", "p", "decision p", "decision",
              "MDE (80%)", "seeds for the smallest effect", "diverged runs (not in the interval)"]
    body = [["primary" if v["primary"] else "exploratory", v["claim"], v["metric"],
             v["test"] + (f" ±{v['margin']:g}" if v["test"] == "equivalence" else f", {v['better']} supports"),
             f"{v['arm']} − {v['baseline'] or 'null ' + format(v['null'], 'g')}", _cell(v["interval"]), _p(v["p"]),
             _p(v["p_adjusted"]), v["verdict"], _p(v["power"]["mde"]), _seeds_needed(v["power"]),
             ", ".join(v["diverged_runs"]) or "none"] for v in e["verdicts"]]
    return title, header, body


def _seeds_needed(power: dict) -> str:
    if power["smallest_effect"] is None:
        return "– (no smallest effect declared)"
    if power["seeds_needed"] is None:
        return f"{power['smallest_effect']:g}: unreachable" if power["mde"] is not None else "–"
    return f"{power['smallest_effect']:g}: {power['seeds_needed']} (power now {power['power']:.0%})"


def _tables(summary: dict, rows: list[dict]) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(experiment, title, header, rows) for every table of the report."""
    out = []
    for name, e in summary["experiments"].items():
        metrics = headline_metrics(e["arms"], e["verdicts"], e.get("gates", ()))
        if e.get("gates"):
            out.append((name, GATES_TITLE, ["gate", "condition", "arms", "passed"], [_gate_row(g) for g in e["gates"]]))
        out.append((name, *_verdict_table(e)))
        out.append((name, f"Arms (mean [{INTERVAL_METHOD}; fractions: {BOUNDED_METHOD}]; divergence: "
                          f"{e['arms'][next(iter(e['arms']))]['divergence']['method']}; every column is in "
                          "results.csv and report.json)", ["arm", "runs", "diverged", *metrics],
                    [[g, f"{a['runs']}/{a['planned']}", _rate(a["divergence"]),
                      *[_cell(a["metrics"][m]) for m in metrics]] for g, a in e["arms"].items()]))
        out.append((name, "The columns in words (the headings are results.csv's names)", ["column", "in words"],
                    [[m, column_words(m)] for m in metrics]))
        out.append((name, f"Paired differences, arm − {e['reference_arm']} ({PAIRED_METHOD})", ["arm", *metrics],
                    [[f"{g} − {e['reference_arm']}", *[_cell(d[m]) for m in metrics]]
                     for g, d in e["paired_vs_reference"].items()]))
        if e["streams"]:
            out.append((name, "Stream differences, first − second stream: the t interval of the per-seed differences "
                              "(each run one sample), and the hierarchical bootstrap (seeds, then heads within layers; "
                              "optimistic at few seeds, as it treats heads as independent draws)",
                        ["arm, model, metric", "streams", "seed-level mean [95% t CI]", "bootstrap 95% CI", "runs"],
                        [[k, f"{s['a']} − {s['b']}", _cell(s["seed_level"]),
                          f"[{s['ci95'][0]:.3g}, {s['ci95'][1]:.3g}]", str(s["runs"])]
                         for k, s in e["streams"].items()]))
        if e.get("ladder"):
            out.append((name, *_ladder_table(e["ladder"])))
        if e.get("stability"):
            out.append((name, f"Stability: failure rate per learning rate ({FAILURE_RULE}; exact binomial 95% "
                              "interval) and the critical lr (the smallest with most seeds failing; 95% bootstrap "
                              "over seeds; 'beyond' = past the largest lr tried)",
                        ["arm", *[f"lr {lr:g}" for lr in next(iter(e["stability"].values()))["levels"]],
                         "critical lr [95% CI]"],
                        [[arm, *[_rate(d) for d in st["failure_by_lr"].values()],
                          f"{_lr(st['critical'])} [{_lr(st['ci95'][0])}, {_lr(st['ci95'][1])}]"]
                         for arm, st in e["stability"].items()]))
        if e.get("tuning"):
            t = e["tuning"]
            out.append((name, f"Tuning on the held-out {t['holdout']:.0%} of the training split ({t['metric']}: mean "
                              f"[95% t interval] over tuning seeds {t['seeds']}; the verdict runs use each arm's "
                              "chosen point, on the whole train split, scored on val)",
                        ["arm", "point", t["metric"], "chosen"],
                        [[arm, ", ".join(f"{k} = {v}" for k, v in p["point"].items()), _cell(p),
                          "yes" if t["chosen"] and t["chosen"].get(arm) == p["point"] else ""]
                         for arm, curve in t["curves"].items() for p in curve.values()]))
        cols = ["arm", "seed", "diverged", *[m for m in metrics if m != "diverged"]]
        out.append((name, "Runs", cols, [[_fmt(r.get(c)) for c in cols] for r in rows if r["experiment"] == name]))
    return out


def _ladder_table(lad: dict) -> tuple[str, list[str], list[list[str]]]:
    fit = lad["slope_vs_log10_tokens"]
    slope = "–" if fit["slope"] is None else f"{fit['slope']:.3g} [{fit['ci95'][0]:.3g}, {fit['ci95'][1]:.3g}]"
    match = lad.get("tokens_to_match")
    reach = ""
    if match:
        where = (f"at {match['tokens']:.3g} tokens, {match['times_last_point']:.2g}× the last point's ({match['how']})"
                 if match["tokens"] else f"nowhere ({match['how']})")
        reach = f"; {lad['arm']} reaches {lad['baseline']}'s last level ({match['baseline_level']:.4g}) {where}"
    title = (f"Across scale: {lad['metric']}, {lad['arm']} − {lad['baseline']} per seed at each point (95% t interval "
             f"over seeds); slope against log10 tokens {slope} per decade (fitted within each seed, 95% t interval "
             f"over the {fit['n']} seeds' slopes): {lad['verdict']}{reach}")
    rows = [[", ".join(f"{k} = {v}" for k, v in p["point"].items()), _fmt(p["tokens"]), _fmt(p["parameters"]),
             _cell(p["difference"])] for p in lad["points"]]
    return title, ["point", "tokens", "parameters", f"{lad['arm']} − {lad['baseline']}"], rows


def _lr(x) -> str:
    return "beyond" if x is None else f"{x:g}"


def _rate(d: dict) -> str:
    if not d["n"]:
        return "–"
    return f"{d['k']}/{d['n']} [{d['ci95'][0]:.2f}, {d['ci95'][1]:.2f}]"


FIGURE_TEXT = {
    "loss": ("Training loss of every run, coloured by arm",
             "The per-step training loss (log scale) of each run of the file: arms that separate early and "
             "stay apart differ beyond seed noise; the verdicts use the validation numbers below."),
    "metrics": ("The claim's metrics per arm: mean, 95% t interval over seeds, and each seed",
                "One panel per headline metric; a dot per seed, the bar the seed-level interval. Read the sign "
                "of a difference from the verdict table (arm − baseline, paired by seed)."),
    "tuning": ("Tuning curves: each arm's held-out loss against its learning rate",
               "Mean and 95% t interval over the tuning seeds, on the held-out part of the training split "
               "(never val); the ringed point is the one each arm's verdict runs use."),
    "ladder": ("The gap across scale",
               "The paired difference (arm − baseline) per seed at each ladder point, against training tokens "
               "and parameters; the fitted slope against log10 tokens decides whether the gap closes."),
}


def _markdown(summary: dict, rows: list[dict]) -> str:
    lines = ["# Sweep report", "", f"Intervals: {INTERVAL_METHOD}. Paired: {PAIRED_METHOD}. Verdicts: {VERDICT_RULES}.",
             "", "Decisions:", "", *[f"- **{word}**: {meaning}" for word, meaning in DECISION_WORDS.items()], ""]
    current = None
    for name, title, header, body in _tables(summary, rows):
        if name != current:
            e = summary["experiments"][name]
            lines += [f"## {name}", "", e["description"] or "", f"File: `{e['file']}`", ""]
            for kind, (title_, caption) in FIGURE_TEXT.items():
                key = f"{name}_{kind}"
                if key in summary["figures"]:
                    lines += [f"**{title_}**", "", f"![{title_}]({summary['figures'][key]})", "", f"*{caption}*", ""]
            current = name
        heading, caption = _heading(title)
        lines += [f"### {heading}", "", *([f"*{caption}*", ""] if caption else []),
                  *render.markdown_table(header, body), ""]
    return "\n".join(lines)


def _heading(title: str) -> tuple[str, str]:
    """A table's title as a short heading and its method as a caption: the text before the first
    " (" heads the table, the rest (its parentheses dropped) is the caption."""
    cut = title.find(" (")
    if cut < 0:
        return title, ""
    rest = title[cut + 1:]
    if rest.startswith("(") and rest.endswith(")") and rest.count("(") == rest.count(")"):
        rest = rest[1:-1]
    return title[:cut], rest


def _html(summary: dict, rows: list[dict], out: Path) -> str:
    parts = ["<h1>Sweep report</h1>", f"<p>Intervals: {html.escape(INTERVAL_METHOD)}. "
             f"Paired: {html.escape(PAIRED_METHOD)}. Verdicts: {html.escape(VERDICT_RULES)}.</p>",
             "<ul>" + "".join(f"<li><b>{w}</b>: {html.escape(m)}</li>" for w, m in DECISION_WORDS.items()) + "</ul>"]
    current = None
    for name, title, header, body in _tables(summary, rows):
        if name != current:
            e = summary["experiments"][name]
            parts.append(f"<h2>{html.escape(name)}</h2><p>{html.escape(e['description'] or '')}</p>")
            for kind, (title_, caption) in FIGURE_TEXT.items():
                key = f"{name}_{kind}"
                if key in summary["figures"]:
                    parts += [f"<h4>{html.escape(title_)}</h4>", render.html_image(out / summary["figures"][key],
                                                                                  title_),
                              f"<p><em>{html.escape(caption)}</em></p>"]
            current = name
        heading, caption = _heading(title)
        parts += [f"<h3>{html.escape(heading)}</h3>", *([f"<p><em>{html.escape(caption)}</em></p>"] if caption else []),
                  render.html_table(header, body)]
    return render.html_page("Sweep report", parts)
