"""Experiment files: a base config, overrides, named arms, grid axes and seeds, expanded to runs.

An experiment file (TOML) is either one experiment or a suite that includes others::

    name = "c1-prism-vs-gpt-tiny"     # optional, default: the file's stem
    description = "what it tests"
    base = "tiny-prism-cpu"          # a shipped config name or a path (relative to the file)
    seeds = [0, 1, 2]
    data = "embedded:6000"           # optional: a source the sweep prepares once into OUT/data/
                                     # (or a list of sources, prepared together into one folder)
    [set.run]                        # overrides for every run, by config section
    max_iters = 300
    [arms.prism-pi.model.prism]      # one table per arm; an arm may name its own base
    freq_multiplier = "pi"
    [arms.gpt]
    base = "tiny-gpt-cpu"
    [grid]                           # optional axes: every arm runs at every combination
    "optim.lr" = [3e-3, 1e-2]
    [evaluate]                       # what runs after training (see EvaluateSpec)
    contexts = [128]
    [[gates]]                        # positive controls: no verdict unless each passes (see Gate)
    name = "GPT-RoPE learns the recalls"
    metric = "recall_accuracy"
    arm = "gpt-rope"
    above = 0.9
    [[verdicts]]                     # claims the report decides from the numbers (see Verdict)
    claim = "PRISM beats GPT-RoPE"
    metric = "val_loss_128"
    arm = "prism-pi"
    baseline = "gpt-rope"
    better = "lower"

    # a suite:
    include = ["c1.toml", "c2.toml"]

    # the same experiment at another scale: the parent file's table with this one merged over it
    extends = "c1-prism-vs-gpt-tiny.toml"  # tables merge key by key; other values (lists too) replace
    name = "c1-prism-vs-gpt-sample"        # name and expected_minutes are never inherited
    data = ""                              # "" drops the parent's data source (runs read set.data.dir)
    [set.run]
    max_iters = 600

Design choices:
- Loading is as strict as configs: unknown keys, arms, verdict metrics' arms and config keys are
  one-line errors, and every run's config is validated before anything starts.
- A run is identified by its resolved training config (less where it writes, where its data sits
  and whether it shows a progress bar) plus the data source: the first 10 hex digits of a sha256.
  Runs with the same identity are the same run, so a suite's experiments share them.
- One claim, one list of arms and verdicts: the -sample and -paper files extend the -tiny one and
  change only the scale (steps, data, bases, seeds), so a control added to a claim reaches every scale.
- Evaluation settings are not part of the identity: changing them re-evaluates, never retrains.
- A verdict's metric must be a column its arm's runs will have (``EvaluateSpec.columns``): a typo
  is an error when the file loads, not after every run has trained.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prism_lm.config import (
    IDENTITY_EXCLUDED_KEYS,
    TrainConfig,
    flatten,
    from_dict,
    load_train_config,
    to_dict,
    tomllib,
)
from prism_lm.errors import PrismError
from prism_lm.experiments.claim_spec import (
    Gate,
    Verdict,
    check_claim_metrics,
    check_confirmatory,
    load_gate,
    load_verdict,
)
from prism_lm.experiments.job import EvaluateSpec
from prism_lm.model.config import flat_legacy_dict
from prism_lm.train.schedules import lr_horizon

EXPERIMENT_KEYS = {"name", "description", "base", "seeds", "data", "set", "arms", "grid", "evaluate", "verdicts",
                   "gates", "confirmatory", "slurm", "expected_minutes", "min_seeds", "tune", "ladder", "extends"}
NOT_INHERITED = ("name", "expected_minutes")  # a file that extends another names its own scale
TUNE_KEYS = {"grid", "seeds", "metric", "holdout", "arms"}
LADDER_KEYS = {"points", "arm", "baseline", "metric", "claim"}
DEFAULT_MIN_SEEDS = 5
SOURCE_JOIN = " + "  # data = [A, B] is the source "A + B"
SLURM_KEYS = {"partition", "timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb", "account", "qos"}
# keys added to the config after sweeps were run: they enter a run's identity only when they differ
# from their default, so the folders of earlier sweeps keep their names
LATE_KEYS = {"model.mlp": "gelu", "model.position_embedding": "learned", "model.rope_scaling": "base",
             "data.holdout": 0.0, "model.final_norm": True, "model.ista_step_size": 0.1, "model.ista_lambda": 0.1,
             "model.ista_mode": "replace", "model.gpt_output_scale": 1.0, "data.loss_on": "all"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass
class TuneSpec:
    """``[tune]``: each arm's hyper-parameters chosen on a held-out part of the training split, at
    every point of the file (each ladder point, or the one point of a file without a ladder).

    Every arm trains at every tuning point for each of ``seeds`` (the tuning seeds, apart from the
    verdict seeds) with ``data.holdout = holdout``: it trains on the first 1 - holdout of the train
    split and is scored on the rest, never on val. An arm's tuning points are the product of
    ``grid`` (config keys, two values or more each) and its own ``[tune.arms.ARM] points`` (a list of
    overrides: an arm's own knobs, e.g. PRISM's λ as the paper's schedule, held at 1, or learned;
    default one empty point). At each point of the file, the tuning point with the lowest mean
    ``metric`` over the tuning seeds is the arm's there; its verdict runs then train at it on the
    whole train split and are scored on val as usual.
    """

    grid: dict[str, list]
    seeds: list[int]
    metric: str
    holdout: float = 0.1
    chosen: dict[str, dict[str, Any]] | None = None  # group -> {key: value}, once the tuning runs are in
    arms: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # arm -> its own tuning points

    def points(self, arm: str) -> list[dict[str, Any]]:
        """The arm's tuning points: the grid's product, each merged with each of the arm's own points."""
        keys = list(self.grid)
        grid = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(self.grid[k] for k in keys))]
        return [{**g, **own} for g in grid for own in self.arms.get(arm, [{}])]


def point_key(point: dict[str, Any]) -> str:
    """A tuning point as one comparable value (its keys sorted)."""
    return json.dumps(point, sort_keys=True)


@dataclass
class LadderSpec:
    """``[ladder]``: the same arms at several scales (``points``: config overrides, e.g. steps or
    widths), and the question "does the gap close?": the report fits the per-seed difference
    ``arm`` − ``baseline`` of ``metric`` at every point against log tokens and decides from the
    slope's interval whether the gap closes (moves toward 0), grows, or is inconclusive."""

    points: list[dict[str, Any]]
    arm: str
    baseline: str
    metric: str
    claim: str = "the gap between the arms closes with training tokens"


@dataclass
class PlannedRun:
    experiment: str
    arm: str
    group: str  # arm plus its grid point, e.g. "prism/lr=0.01"
    grid: dict[str, Any]
    seed: int
    config: TrainConfig
    identity: str
    data_source: str | None

    @property
    def name(self) -> str:
        """The run's folder: its group in characters safe on every file system, seed, identity."""
        label = re.sub(r"[^A-Za-z0-9_.+-]", "-", self.group.replace("/", "_").replace("=", ""))
        return f"{label}-s{self.seed}-{self.identity}"


@dataclass
class Experiment:
    name: str
    path: Path
    description: str
    seeds: list[int]
    arms: list[str]
    groups: list[str]
    data_source: str | None
    evaluate: EvaluateSpec
    verdicts: list[Verdict]
    slurm: dict[str, Any]
    expected_minutes: float | None
    runs: list[PlannedRun]
    min_seeds: int = DEFAULT_MIN_SEEDS
    tune: TuneSpec | None = None
    source: dict = field(default_factory=dict, repr=False)  # the file's table, to plan the tuned runs again
    tune_runs: list[PlannedRun] = field(default_factory=list)
    ladder: LadderSpec | None = None
    gates: list[Gate] = field(default_factory=list)
    confirmatory: bool = False  # its primary's verdict runs: fresh seeds, sized for 80% power

    @property
    def planned(self) -> bool:
        """Whether the verdict runs are final: no [tune], or its choices are in."""
        return self.tune is None or self.tune.chosen is not None


def load_experiments(path: str | Path) -> list[Experiment]:
    """Every experiment of a file (a suite's included files, in order), expanded and validated."""
    path = Path(path)
    experiments = _load(path, seen=())
    names = [e.name for e in experiments]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise PrismError(f"{path}: two experiments are named {duplicate!r}")
    return experiments


def _read(path: Path) -> dict:
    if not path.is_file():
        raise PrismError(f"experiment file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PrismError(f"experiment file {path} is not valid TOML: {exc}") from None


def _load(path: Path, seen: tuple[Path, ...]) -> list[Experiment]:
    if path.resolve() in seen:
        raise PrismError(f"{path} includes itself")
    data = _read(path)
    if "include" in data:
        extra = set(data) - {"include", "description", "expected_minutes"}
        if extra:
            raise PrismError(f"{path}: a suite holds only include, description and expected_minutes, "
                             f"not {sorted(extra)[0]!r}")
        if not isinstance(data["include"], list) or not data["include"]:
            raise PrismError(f"{path}: include must be a non-empty list of experiment files")
        return [e for item in data["include"] for e in _load(path.parent / item, (*seen, path.resolve()))]
    return [_experiment(path, _extended(path, data, seen))]


def _extended(path: Path, data: dict, seen: tuple[Path, ...]) -> dict:
    """``data`` merged over the file it ``extends`` (recursively); ``data = ""`` removes the parent's source."""
    if "extends" not in data:
        return data
    parent_path = path.parent / data["extends"] if isinstance(data["extends"], str) else None
    if parent_path is None:
        raise PrismError(f"{path}: extends must name an experiment file")
    if parent_path.resolve() in (*seen, path.resolve()):
        raise PrismError(f"{path} extends itself")
    parent = _read(parent_path)
    if "include" in parent:
        raise PrismError(f"{path}: extends {parent_path}, a suite; extend one experiment file")
    parent = _extended(parent_path, parent, (*seen, path.resolve()))
    parent = {k: v for k, v in parent.items() if k not in NOT_INHERITED}
    merged = _merge(parent, {k: v for k, v in data.items() if k != "extends"})
    if merged.get("data") == "":
        del merged["data"]
    return merged


def _merge(parent: dict, child: dict) -> dict:
    out = dict(parent)
    for key, value in child.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _experiment(path: Path, data: dict) -> Experiment:
    where = str(path)
    name, seeds, arms = _check_header(where, path, data)
    grid = data.get("grid", {})
    for key, values in grid.items():
        if not _config_key(key) or not isinstance(values, list) or not values:
            raise PrismError(f"{where}: grid axis {key!r} must be 'section.key' (or 'model.prism.key') = [values]")
    data_source = data_source_of(where, data)
    evaluate = from_dict(EvaluateSpec, data.get("evaluate", {}), "evaluate")
    evaluate.validate()
    slurm = data.get("slurm", {})
    if set(slurm) - SLURM_KEYS:
        raise PrismError(f"{where}: unknown slurm key {sorted(set(slurm) - SLURM_KEYS)[0]!r} "
                         f"(known: {', '.join(sorted(SLURM_KEYS))})")
    tune = _tune_spec(where, data.get("tune"), grid, data["arms"])
    ladder = _ladder_spec(where, data.get("ladder"), grid, data["arms"])
    # tuned values: provisional until the tuning runs are in, each arm at its first tuning point
    provisional = {group_name(arm, p): tune.points(arm)[0] for arm in arms for p in _points(data)} if tune else {}
    runs, groups = _expand(path, data, name, provisional)
    _check_contexts(where, evaluate, runs)
    verdicts = [load_verdict(where, v, groups) for v in data.get("verdicts", [])]
    gates = [load_gate(where, g, groups) for g in data.get("gates", [])]
    columns: dict[str, set[str]] = {}
    for r in runs:
        columns.setdefault(r.group, set()).update(evaluate.columns(r.config))
    check_claim_metrics(where, verdicts, gates, columns)
    primaries = [v.claim for v in verdicts if v.primary]
    if len(primaries) > 1:
        raise PrismError(f"{where}: {len(primaries)} verdicts are marked primary ({primaries[0]!r}, {primaries[1]!r}); "
                         "a claim pre-registers one")
    min_seeds = data.get("min_seeds", DEFAULT_MIN_SEEDS)
    if isinstance(min_seeds, bool) or not isinstance(min_seeds, int) or min_seeds < 2:
        raise PrismError(f"{where}: min_seeds must be an integer >= 2 (no interval from fewer), got {min_seeds!r}")
    confirmatory = data.get("confirmatory", False)
    if not isinstance(confirmatory, bool):
        raise PrismError(f"{where}: confirmatory must be true or false, got {confirmatory!r}")
    if confirmatory:
        check_confirmatory(where, verdicts, seeds, tune.seeds if tune else [])
    exp = Experiment(name, path, data.get("description", ""), seeds, list(arms), groups, data_source, evaluate,
                     verdicts, slurm, data.get("expected_minutes"), runs, min_seeds, tune, data, ladder=ladder,
                     gates=gates, confirmatory=confirmatory)
    if ladder:
        for label in (ladder.arm, ladder.baseline):
            runs_of = [r for r in runs if r.arm == label]
            if not all(ladder.metric in evaluate.columns(r.config) for r in runs_of):
                raise PrismError(f"{where}: ladder.metric {ladder.metric!r} is not a column that arm {label!r} "
                                 "produces with this [evaluate]")
    if tune:
        exp.tune_runs = _tune_runs(exp)
        columns = set().union(*(tune_evaluate(evaluate).columns(r.config) for r in exp.tune_runs))
        if tune.metric not in columns:
            raise PrismError(f"{where}: tune.metric {tune.metric!r} is not a column the tuning runs produce "
                             f"(e.g. {', '.join(sorted(c for c in columns if c.startswith('val_loss')))})")
    return exp


def _check_header(where: str, path: Path, data: dict) -> tuple[str, list[int], dict]:
    """The file's known keys, name, seeds and arms, checked."""
    unknown = set(data) - EXPERIMENT_KEYS
    if unknown:
        raise PrismError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(EXPERIMENT_KEYS))})")
    for key in ("base", "seeds", "arms"):
        if key not in data:
            raise PrismError(f"{where}: missing {key!r}")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PrismError(f"{where}: name must be letters, digits, '-', '_', '.', got {name!r}")
    seeds = _seed_list(where, "seeds", data["seeds"])
    arms = data["arms"]
    if not isinstance(arms, dict) or not arms:
        raise PrismError(f"{where}: arms must hold at least one [arms.NAME] table")
    for arm in arms:
        if not _NAME.fullmatch(arm):
            raise PrismError(f"{where}: arm name {arm!r} must be letters, digits, '-', '_', '.'")
    return name, seeds, arms


def _seed_list(where: str, key: str, seeds) -> list[int]:
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                      for s in seeds)) or len(set(seeds)) != len(seeds):
        raise PrismError(f"{where}: {key} must be a non-empty list of distinct integers >= 0, got {seeds!r}")
    return seeds


def group_name(arm: str, point: dict[str, Any]) -> str:
    """An arm at a grid or ladder point, as its runs' group is named: ``prism/lr=0.01``."""
    return arm + "".join(f"/{k.split('.')[1]}={v}" for k, v in point.items())


def _expand(path: Path, data: dict, name: str, extra: dict[str, dict[str, Any]]) -> tuple[list[PlannedRun], list]:
    """Every (arm, grid point, seed) run, each group (arm and point) with its ``extra`` overrides
    (tuned values)."""
    runs, groups = [], []
    for arm in data["arms"]:
        for point_map in _points(data):
            group = group_name(arm, point_map)
            groups.append(group)
            sets = {**extra.get(group, {}), **point_map}
            runs += [_planned(path, data, name, arm, group, point_map, sets, seed) for seed in data["seeds"]]
    return runs, groups


def _points(data: dict) -> list[dict[str, Any]]:
    """The grid's points (every combination of its axes), or the ladder's points as listed."""
    if "ladder" in data:
        return [dict(p) for p in data["ladder"]["points"]]
    axes = list(data.get("grid", {}).items())
    return [dict(zip([k for k, _ in axes], point, strict=True)) for point in itertools.product(*(v for _, v in axes))]


def data_source_of(where: str, data: dict) -> str | None:
    """The file's ``data``: one source string, or a list of them prepared together into one folder
    (documents of each, in order; e.g. a task and the one that teaches its circuit), kept as one
    string joined by SOURCE_JOIN so that a run's identity and its data folder name both sources."""
    source = data.get("data")
    if isinstance(source, list) and source and all(isinstance(s, str) and s for s in source):
        return SOURCE_JOIN.join(source)
    if source is not None and not isinstance(source, str):
        raise PrismError(f"{where}: data must be a source string such as 'embedded:6000' or a list of them, "
                         f"got {source!r}")
    return source


def _planned(path: Path, data: dict, name: str, arm: str, group: str, labels: dict, point: dict, seed: int
             ) -> PlannedRun:
    data_source = data_source_of(str(path), data)
    cfg = _run_config(path, data.get("base"), data.get("set", {}), arm, data["arms"][arm], point, seed)
    if data_source is None:  # the data a run reads, wherever the sweep is started from
        cfg.data.dir = str(Path(cfg.data.dir).resolve())
    return PlannedRun(name, arm, group, labels, seed, cfg, identity(cfg, data_source), data_source)


def _sections(where: str, table: dict) -> list[str]:
    """``{section: {key: value}}`` as ``section.key=value`` strings (TOML values re-encoded; a nested
    section such as ``model.prism`` one dot deeper)."""
    if not isinstance(table, dict):
        raise PrismError(f"{where} must be a table of config sections")
    out = []
    for section, values in table.items():
        if not isinstance(values, dict):
            raise PrismError(f"{where}.{section} must be a table of config keys")
        out += [f"{key}={json.dumps(value)}" for key, value in flatten(values, f"{section}.").items()]
    return out


def _run_config(path: Path, base: str, common: dict, arm: str, arm_table: dict, point: dict, seed: int
                ) -> TrainConfig:
    arm_table = dict(arm_table)
    arm_base = arm_table.pop("base", base)
    base_path = path.parent / arm_base if (path.parent / arm_base).is_file() else arm_base
    sets = (_sections(f"{path}: set", common) + _sections(f"{path}: arms.{arm}", arm_table)
            + [f"{k}={json.dumps(v)}" for k, v in point.items()] + [f"run.seed={seed}"])
    try:
        return load_train_config(base_path, sets)
    except PrismError as exc:
        raise PrismError(f"{path}, arm {arm!r}: {exc}") from None


def identity(cfg: TrainConfig, data_source: str | None) -> str:
    """10 hex digits naming what a run computes: its resolved config (less ``IDENTITY_EXCLUDED_KEYS``,
    late keys at their defaults left out, the learning-rate horizon as it resolves) and its data."""
    sections = {**to_dict(cfg), "model": flat_legacy_dict(cfg.model)}  # [model.prism] hashed as before it was one
    body = {s: {k: v for k, v in values.items() if f"{s}.{k}" not in IDENTITY_EXCLUDED_KEYS
                and LATE_KEYS.get(f"{s}.{k}", object()) != v}
            for s, values in sections.items()}
    body = {s: values for s, values in body.items() if values}  # a section of logging keys only: not there
    body["optim"]["lr_decay_iters"] = lr_horizon(cfg)
    body["data_source"] = data_source if data_source is not None else cfg.data.dir
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]


def _check_contexts(where: str, evaluate: EvaluateSpec, runs: list[PlannedRun]) -> None:
    """Every evaluation context fits every run's model (checked before anything trains, not after)."""
    for r in runs:
        model = r.config.model
        limit = model.block_size if model.position_embedding == "learned" else 64 * model.block_size
        too_long = [c for c in evaluate.contexts if c > limit]
        if too_long:
            raise PrismError(f"{where}: evaluate.contexts {too_long[0]:,} exceeds what arm {r.arm!r} can read "
                             f"({limit:,} tokens: " + ("its block_size)" if model.position_embedding == "learned"
                                                       else "64 x its block_size, no learned positions)"))


def _check_table(where: str, name: str, table, known: set[str], required: tuple[str, ...], grid: dict) -> None:
    """A [tune] or [ladder] table: known keys only, the required ones present, no [grid] beside it."""
    if not isinstance(table, dict) or set(table) - known:
        bad = sorted(set(table) - known)[0] if isinstance(table, dict) else table
        raise PrismError(f"{where}: unknown {name} key {bad!r} (known: {', '.join(sorted(known))})")
    if grid:
        raise PrismError(f"{where}: [{name}] and [grid] together are not supported; give each its own file")
    missing = [key for key in required if key not in table]
    if missing:
        raise PrismError(f"{where}: [{name}] needs {missing[0]!r}")


def _tune_spec(where: str, table: dict | None, grid: dict, arms: dict) -> TuneSpec | None:
    if table is None:
        return None
    _check_table(where, "tune", table, TUNE_KEYS, ("seeds", "metric"), grid)
    tune_grid = table.get("grid", {})
    if not isinstance(tune_grid, dict):
        raise PrismError(f"{where}: tune.grid must be a table of 'section.key' = [values]")
    for key, values in tune_grid.items():
        if not _config_key(key):
            raise PrismError(f"{where}: tune.grid key {key!r} must be 'section.key' (or 'model.prism.key')")
        if not isinstance(values, list) or len(values) < 2:
            raise PrismError(f"{where}: tune.grid {key!r} needs two values or more to choose from, got {values!r}")
    own = _tune_arm_points(where, table.get("arms", {}), arms)
    if not tune_grid and not own:
        raise PrismError(f"{where}: [tune] needs a grid or some arm's own points (tune.arms.ARM.points)")
    holdout = table.get("holdout", 0.1)
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0.0 < holdout < 0.5:
        raise PrismError(f"{where}: tune.holdout must be a fraction in (0, 0.5), got {holdout!r}")
    return TuneSpec(dict(tune_grid), _seed_list(where, "tune.seeds", table["seeds"]), str(table["metric"]),
                    float(holdout), arms=own)


def _tune_arm_points(where: str, table, arms: dict) -> dict[str, list[dict[str, Any]]]:
    """``[tune.arms.ARM] points = [{...}, ...]``: each arm's own tuning points, checked."""
    if not isinstance(table, dict):
        raise PrismError(f"{where}: tune.arms must be a table of arms, each with points = [...]")
    out = {}
    for arm, spec in table.items():
        if arm not in arms:
            raise PrismError(f"{where}: tune.arms names unknown arm {arm!r} (arms: {', '.join(arms)})")
        points = spec.get("points") if isinstance(spec, dict) and set(spec) == {"points"} else None
        if not isinstance(points, list) or len(points) < 2 or not all(isinstance(p, dict) for p in points):
            raise PrismError(f"{where}: tune.arms.{arm} needs points = [two tables or more] to choose from")
        for key in (k for p in points for k in p):
            if not _config_key(key):
                raise PrismError(f"{where}: tune.arms.{arm} point key {key!r} must be 'section.key' (or "
                                 "'model.prism.key')")
        out[arm] = [dict(p) for p in points]
    return out


def _arm_of(group: str) -> str:
    return group.split("/", 1)[0]


def _tune_runs(exp: Experiment) -> list[PlannedRun]:
    """Every arm at every point of the file, at each of its tuning points and tuning seeds, trained and
    scored on the split train. A run's group is its verdict group, ``/tune:`` and the tuning point."""
    tune, runs = exp.tune, []
    for arm in exp.arms:
        for point_map in _points(exp.source):
            base = group_name(arm, point_map)
            for point in tune.points(arm):
                group = f"{base}/tune:" + ",".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())
                for seed in tune.seeds:
                    try:
                        runs.append(_planned(exp.path, exp.source, exp.name, arm, group, point,
                                             {**point, **point_map, "data.holdout": tune.holdout}, seed))
                    except PrismError as error:
                        raise PrismError(f"{exp.path}: [tune]: {error}") from None
    return runs


def tuned_group(tune_group: str) -> str:
    """The verdict group a tuning run's group chooses for."""
    return tune_group.split("/tune:", 1)[0]


def tune_evaluate(evaluate: EvaluateSpec) -> EvaluateSpec:
    """What a tuning run evaluates: the losses, no head statistics."""
    return EvaluateSpec(list(evaluate.contexts), 0, False)


def choose_tuned(tune: TuneSpec, scores: dict[tuple[str, str], list[float]], groups: list[str]) -> dict[str, dict]:
    """Each group's tuning point with the lowest mean tuning metric (``scores``: (verdict group,
    ``point_key``) -> the metric of each tuning seed; ties go to the earlier point); a group with no
    finished tuning run is an error."""
    chosen = {}
    for group in groups:
        order = [point_key(p) for p in tune.points(_arm_of(group))]
        means = {k: sum(v) / len(v) for (g, k), v in scores.items() if g == group and v}
        if not means:
            raise PrismError(f"no tuning run of {group!r} has {tune.metric!r}: cannot choose its hyper-parameters")
        best = min(means, key=lambda k: (means[k], order.index(k) if k in order else len(order)))
        chosen[group] = json.loads(best)
    return chosen


def apply_tuning(exp: Experiment, chosen: dict[str, dict[str, Any]]) -> None:
    """Plan the verdict runs again, each group (arm and point) at its chosen tuning point."""
    exp.tune.chosen = chosen
    exp.runs, _ = _expand(exp.path, exp.source, exp.name, chosen)


def _config_key(key) -> bool:
    """A config key as grids, tuning and ladders name it: ``section.key``, or ``model.SECTION.key``."""
    return isinstance(key, str) and re.fullmatch(r"[a-z_]+\.[a-z_]+(\.[a-z_]+)?", key) is not None


def _ladder_spec(where: str, table: dict | None, grid: dict, arms: dict) -> LadderSpec | None:
    if table is None:
        return None
    _check_table(where, "ladder", table, LADDER_KEYS, ("points", "arm", "baseline", "metric"), grid)
    points = table["points"]
    if not isinstance(points, list) or len(points) < 2 or not all(isinstance(p, dict) and p for p in points):
        raise PrismError(f"{where}: ladder.points must list two points or more, each a table of 'section.key' = value")
    for point in points:
        for key in point:
            if not _config_key(key):
                raise PrismError(f"{where}: ladder point key {key!r} must be 'section.key' (or 'model.prism.key')")
    for label in (table["arm"], table["baseline"]):
        if label not in arms:
            raise PrismError(f"{where}: ladder names unknown arm {label!r} (arms: {', '.join(arms)})")
    if table["arm"] == table["baseline"]:
        raise PrismError(f"{where}: ladder arm and baseline are both {table['arm']!r}: the gap would be 0 by "
                         "construction; name two arms")
    return LadderSpec([dict(p) for p in points], table["arm"], table["baseline"], str(table["metric"]),
                      str(table.get("claim", LadderSpec.claim)))
