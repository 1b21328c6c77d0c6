"""What a claim asks of its sweep: its verdicts (``[[verdicts]]``) and its positive controls
(``[[gates]]``), as an experiment file states them, checked when the file loads. The rules that
decide them are ``verdicts.py``'s; the plan that runs them is ``spec.py``'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from prism_lm.errors import PrismError
from prism_lm.experiments.verdicts import declared_power, seeds_needed_words, verdict_effect
from prism_lm.stats import POWER, finite

GATE_KEYS = {"name", "metric", "arm", "baseline", "above", "below"}
VERDICT_KEYS = {"claim", "metric", "arm", "baseline", "null", "better", "primary", "test", "margin",
                "smallest_effect", "expected_sd"}


@dataclass
class Verdict:
    """A claim decided from seed-level numbers: ``arm`` minus ``baseline`` (paired by seed) or, without
    a baseline, ``arm``'s values against ``null``.

    ``test = "difference"``: a two-sided t test; ``better`` (lower or higher) names the side that
    supports the claim. ``test = "equivalence"``: the claim is "no difference larger than
    ``margin``", decided by two one-sided tests (TOST). ``primary``: the one pre-registered verdict of
    its claim (an experiment file), tested alone at α; the others are exploratory, Holm-adjusted
    among themselves (``experiments/verdicts.py``). ``smallest_effect``: the smallest difference the
    claim must see (an equivalence's is its margin); with ``expected_sd`` (the per-seed spread an
    earlier table measured) the sweep says before training whether its seeds reach 80% power."""

    claim: str
    metric: str
    arm: str
    baseline: str | None = None
    null: float = 0.0
    better: str = "lower"
    primary: bool = False
    test: str = "difference"
    margin: float | None = None
    smallest_effect: float | None = None
    expected_sd: float | None = None


@dataclass
class Gate:
    """A positive control (``[[gates]]``): a condition on this sweep's own runs showing that the
    claim's phenomenon exists and is measurable in this regime (the baseline learns the recalls, a
    sink exists to be measured, the baseline degrades at 4×). ``arm`` (a group, or a list of groups:
    any one suffices) must have the 95% t interval over seeds of ``metric`` wholly above ``above``
    (or wholly below ``below``); with ``baseline``, the interval of the per-seed difference arm −
    baseline (paired by seed), for a control that a measure tells a known contrast apart (it sees
    resonance where the arms resonate by construction). If any gate of a file fails, every verdict of
    the file reads "untestable in this regime: <gate> (<numbers>)", a decision of its own, never
    inconclusive."""

    name: str
    metric: str
    arm: str | list[str]
    above: float | None = None
    below: float | None = None
    baseline: str | None = None

    @property
    def arms(self) -> list[str]:
        return [self.arm] if isinstance(self.arm, str) else list(self.arm)

    @property
    def arms_read(self) -> list[str]:
        """Every arm whose runs the gate reads: its arms, and its baseline if it has one."""
        return self.arms + ([self.baseline] if self.baseline else [])

    def record(self) -> dict:
        """The gate as a sweep's plan records it (no ``baseline`` key when it has none, as before it had one)."""
        return {k: v for k, v in vars(self).items() if k != "baseline" or v is not None}


def load_verdict(where: str, table: dict, groups: list[str]) -> Verdict:
    unknown = set(table) - VERDICT_KEYS
    if unknown:
        raise PrismError(f"{where}: unknown verdict key {sorted(unknown)[0]!r} "
                         f"(known: {', '.join(sorted(VERDICT_KEYS))})")
    try:
        verdict = Verdict(**table)
    except TypeError:
        raise PrismError(f"{where}: a verdict needs claim, metric and arm") from None
    for label in (verdict.arm, verdict.baseline):
        if label is not None and label not in groups:
            raise PrismError(f"{where}: verdict {verdict.claim!r} names unknown arm {label!r} "
                             f"(arms: {', '.join(groups)})")
    if verdict.arm == verdict.baseline:
        raise PrismError(f"{where}: verdict {verdict.claim!r} compares {verdict.arm!r} with itself; name two arms")
    if verdict.better not in ("lower", "higher"):
        raise PrismError(f"{where}: verdict better must be 'lower' or 'higher', got {verdict.better!r}")
    if verdict.test not in ("difference", "equivalence"):
        raise PrismError(f"{where}: verdict test must be 'difference' or 'equivalence', got {verdict.test!r}")
    if verdict.test == "equivalence" and not (isinstance(verdict.margin, (int, float)) and verdict.margin > 0):
        raise PrismError(f"{where}: equivalence verdict {verdict.claim!r} needs a margin > 0 (the largest "
                         f"difference that counts as none), got {verdict.margin!r}")
    for key in ("smallest_effect", "expected_sd"):
        value = getattr(verdict, key)
        if value is not None and not (finite(value) and value > 0):
            raise PrismError(f"{where}: verdict {verdict.claim!r}: {key} must be a number > 0, got {value!r}")
    if not isinstance(verdict.primary, bool):
        raise PrismError(f"{where}: verdict primary must be true or false, got {verdict.primary!r}")
    return verdict


def load_gate(where: str, table, groups: list[str]) -> Gate:
    if not isinstance(table, dict) or set(table) - GATE_KEYS:
        bad = sorted(set(table) - GATE_KEYS)[0] if isinstance(table, dict) else table
        raise PrismError(f"{where}: unknown gate key {bad!r} (known: {', '.join(sorted(GATE_KEYS))})")
    try:
        gate = Gate(**table)
    except TypeError:
        raise PrismError(f"{where}: a gate needs name, metric, arm and one of above or below") from None
    bounds = [b for b in (gate.above, gate.below) if b is not None]
    if len(bounds) != 1 or not finite(bounds[0]):
        raise PrismError(f"{where}: gate {gate.name!r} needs exactly one finite bound, above or below")
    if not gate.arms or not all(isinstance(a, str) and a in groups for a in gate.arms):
        raise PrismError(f"{where}: gate {gate.name!r} names unknown arm {gate.arm!r} (arms: {', '.join(groups)})")
    if gate.baseline is not None and (gate.baseline not in groups or gate.baseline in gate.arms):
        raise PrismError(f"{where}: gate {gate.name!r}: baseline {gate.baseline!r} must be another of the arms "
                         f"({', '.join(groups)})")
    return gate


def check_claim_metrics(where: str, verdicts: list[Verdict], gates: list[Gate], columns: dict[str, set[str]]) -> None:
    """Each verdict's and gate's metric must be a column that its arms' runs will produce (``columns``:
    group -> the columns of its runs), so a typo is refused when the file loads, before any training."""
    for v in verdicts:
        for label in filter(None, (v.arm, v.baseline)):
            if v.metric not in columns[label]:
                close = sorted(c for c in columns[label] if v.metric.split("_")[0] in c)[:6]
                hint = f"; similar: {', '.join(close)}" if close else ""
                raise PrismError(f"{where}: verdict {v.claim!r}: metric {v.metric!r} is not a column that arm "
                                 f"{label!r} produces with this [evaluate]{hint}")
    for gate in gates:
        for label in gate.arms_read:
            if gate.metric not in columns[label]:
                raise PrismError(f"{where}: gate {gate.name!r}: metric {gate.metric!r} is not a column that arm "
                                 f"{label!r} produces with this [evaluate]")


def check_confirmatory(where: str, verdicts: list[Verdict], seeds: list[int], tune_seeds: list[int]) -> None:
    """A confirmatory file (``confirmatory = true``) tests its pre-registered primary on seeds no tuning
    run of it uses, sized before training: the primary states ``smallest_effect`` and ``expected_sd``
    and its seeds reach 80% power for that effect at α (``stats.power_analysis``). That no earlier
    table used its seeds is checked against the committed tables by
    ``tests/experiments/test_confirmatory.py``."""
    primary = next((v for v in verdicts if v.primary), None)
    if primary is None:
        raise PrismError(f"{where}: a confirmatory file needs its pre-registered primary (primary = true)")
    if primary.smallest_effect is None or primary.expected_sd is None:
        raise PrismError(f"{where}: a confirmatory primary states smallest_effect and expected_sd, so that its "
                         "seeds are sized before training")
    shared = sorted(set(seeds) & set(tune_seeds))
    if shared:
        raise PrismError(f"{where}: confirmatory seeds {shared} are also tuning seeds; use fresh seeds")
    effect, power = verdict_effect(asdict(primary)), declared_power(asdict(primary), len(seeds))
    if power["power"] is None or power["power"] < POWER:
        raise PrismError(f"{where}: the confirmatory primary reaches {power['power'] or 0:.0%} power at "
                         f"{len(seeds)} seeds for {effect:g} at sd {primary.expected_sd:g}; it needs "
                         f"{seeds_needed_words(power)} seeds")
