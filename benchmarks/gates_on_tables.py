"""Which positive controls (gates) pass in the committed claims tables.

Reads each committed table under benchmarks/results/ (results.csv and sweep.json) and the gates the
shipped experiment files now declare, and decides every gate from the table's rows with the
report's own rule (``verdicts.gate_results``). Gate columns newer than the tables are derived from
the columns they hold: ``all_sink_first4_rel`` = all_sink_first4 over a uniform head's value at the
window (``heads.uniform_values``), ``recall_excess`` = recall_loss − other_loss, ``context_gain`` =
unigram_entropy − val_loss_128, and ``failed`` by today's rule (``job.is_failure``). A
gate's arm missing from its own experiment is looked up in the table's other experiments (shared
runs carry the same arm name; the source is printed).

    python benchmarks/gates_on_tables.py            # a Markdown table on stdout

Measured 2026-12-07 on the 2-core dev machine, beside a sweep: 9 s (no training; it reads tables).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prism_lm.analysis.heads import uniform_values  # noqa: E402
from prism_lm.experiments.job import is_failure  # noqa: E402
from prism_lm.experiments.report import read_results_csv  # noqa: E402
from prism_lm.experiments.spec import load_experiments  # noqa: E402
from prism_lm.experiments.verdicts import gate_results  # noqa: E402

WINDOW = 128  # the tiny files' block size: the window the sink columns were measured on


def derived(row: dict) -> dict:
    out = dict(row)
    if out.get("all_sink_first4") is not None and out.get("all_sink_first4_rel") is None:
        out["all_sink_first4_rel"] = out["all_sink_first4"] / uniform_values(WINDOW)["sink_first4"]
    if out.get("recall_loss") is not None and out.get("other_loss") is not None and out.get("recall_excess") is None:
        out["recall_excess"] = out["recall_loss"] - out["other_loss"]
    loss, entropy = out.get(f"val_loss_{WINDOW}"), out.get("unigram_entropy")
    if entropy is not None:
        out["failed"] = is_failure(bool(out.get("diverged")), loss, entropy)
        if loss is not None and out.get("context_gain") is None:
            out["context_gain"] = entropy - loss
    return out


def by_group(rows: list[dict], experiment: str, arms: list[str], metric: str) -> tuple[dict, list[str]]:
    """{arm: {metric: {seed: value}}} from the experiment's rows, else from another experiment's."""
    out, sources = {}, []
    for arm in arms:
        for where in (experiment, None):
            mine = [r for r in rows if r["group"] == arm and (where is None or r["experiment"] == where)
                    and r.get(metric) is not None]
            if mine:
                out[arm] = {metric: {r["seed"]: float(r[metric]) for r in mine}}
                if where is None:
                    sources.append(f"{arm} from {mine[0]['experiment']}")
                break
    return out, sources


def main() -> None:
    gates = {e.name: e.gates for path in sorted((ROOT / "experiments").glob("*.toml"))
             for e in load_experiments(path) if e.gates}
    print("| table | claim | gate | arms [95% t CI over seeds] | passes |")
    print("|---|---|---|---|---|")
    for folder in sorted((ROOT / "benchmarks" / "results").glob("claims-*")):
        plan = json.loads((folder / "sweep.json").read_text())
        rows = [derived(r) for r in read_results_csv(folder / "results.csv")]
        for name in plan["experiments"]:
            for gate in gates.get(name, []):
                groups, sources = by_group(rows, name, gate.arms_read, gate.metric)
                (result,) = gate_results([vars(gate)], groups)
                arms = "; ".join(f"{a} {iv['mean']:.3g} [{iv['ci95'][0]:.3g}, {iv['ci95'][1]:.3g}]"
                                 if iv["ci95"] else f"{a} not measured" for a, iv in result["values"].items())
                note = f" ({', '.join(sources)})" if sources else ""
                passes = "yes" if result["passed"] else "no"
                print(f"| {folder.name} | {name} | {gate.name} | {arms}{note} | {passes} |")


if __name__ == "__main__":
    main()
