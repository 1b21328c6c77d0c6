"""Typed configuration: four dataclasses, read from TOML, overridden with ``--set``.

Design choices:
- Each section is a plain dataclass with defaults; the defaults of ``ModelConfig`` are the
  paper's PRISM. There is no other place where defaults live.
- Loading is strict: an unknown section or key, or a value of the wrong type, is a
  ``PrismError`` naming it. Ints are accepted where floats are expected (TOML ``1`` for ``1.0``),
  nothing else is coerced.
- ``--set section.key=value`` parses ``value`` as a TOML value, falling back to a bare string,
  so ``--set model.prism.freq_multiplier=pi`` and ``--set optim.lr=3e-4`` both work; a nested
  section is one more dot (``[model.prism]`` in TOML).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prism_lm.bounds import INT64, bounded_int, finite_float
from prism_lm.errors import PrismError
from prism_lm.model.config import ModelConfig, upgrade_legacy_keys, upgrade_legacy_path
from prism_lm.model.kinds import validate_model

__all__ = ["DataConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig", "load_train_config",
           "resolve_vocab_size"]

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


# Keys that change what a run shows or where it writes, never a number it computes: left out of a
# sweep run's identity (with data.dir, which the identity replaces by the data's source).
WANDB_KEYS = frozenset({"wandb.project", "wandb.entity", "wandb.group", "wandb.tags", "wandb.dir"})
IDENTITY_EXCLUDED_KEYS = frozenset({"run.out_dir", "run.progress", "data.dir"}) | WANDB_KEYS
# Keys that may change on a resume without breaking its exactness: what is shown and where it
# writes, how often it measures and saves, and where it runs. Every identity-excluded key but
# data.dir is one (a resumed run must read the data it started with).
RESUME_SAFE_KEYS = frozenset({"run.out_dir", "run.progress", "run.device", "run.tensorboard", "run.wandb",
                              "run.log_interval", "run.eval_interval", "run.eval_iters", "run.checkpoint_interval",
                              "run.keep_checkpoints", "run.parallel"}) | WANDB_KEYS


SAMPLERS = ("random", "sequential", "bos")
LOSS_ON = ("all", "answers")


@dataclass
class DataConfig:
    dir: str = "data/embedded"  # a prepared shard directory (see `prism data prepare`)
    # random (nanoGPT windows) | sequential (epochs, exact resume) | bos (random windows that start at a
    # document's <|endoftext|>: every sequence has the same first token, where trained LMs form sinks)
    sampler: str = "random"
    # > 0: train on the first 1 - holdout of the train split and score on its last part, never on val
    # (how a sweep's [tune] runs choose hyper-parameters on data the verdicts never score)
    holdout: float = 0.0
    # all (language modelling: every next token) | answers (only the annotated answer tokens, as Zoology
    # trains MQAR: the loss is not spent on the random keys and values around them; the data must have
    # annotations). Training and its val estimates score the same tokens.
    loss_on: str = "all"

    def validate(self) -> None:
        if self.sampler not in SAMPLERS:
            raise PrismError(f"data.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.loss_on not in LOSS_ON:
            raise PrismError(f"data.loss_on must be one of {', '.join(LOSS_ON)}, got {self.loss_on!r}")
        if not 0.0 <= self.holdout < 1.0:
            raise PrismError(f"data.holdout must be in [0, 1), got {self.holdout}")


@dataclass
class OptimConfig:
    lr: float = 6e-4
    min_lr: float = 6e-5
    warmup_iters: int = 1000
    lr_decay_iters: int = 0  # where the cosine reaches min_lr; 0 means run.max_iters (as for λ)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping (the norm is still logged)
    lambda_anneal_iters: int = 0  # T_max of the λ schedule; 0 means run.max_iters

    def validate(self) -> None:
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise PrismError(f"optim: need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.warmup_iters < 0 or self.lr_decay_iters < 0 or self.lambda_anneal_iters < 0:
            raise PrismError("optim: iteration counts must be >= 0")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise PrismError(f"optim.{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("weight_decay", "grad_clip"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise PrismError(f"optim.{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not all(math.isfinite(v) for v in (self.lr, self.min_lr)):
            raise PrismError(f"optim.lr and optim.min_lr must be finite, got {self.lr}, {self.min_lr}")


@dataclass
class RunConfig:
    out_dir: str = "runs/prism"
    max_iters: int = 20000
    batch_size: int = 32
    grad_accum: int = 2
    eval_interval: int = 2000
    eval_iters: int = 200
    log_interval: int = 10
    checkpoint_interval: int = 2000
    keep_checkpoints: int = 3
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16
    compile: bool = False
    loss_chunk: int = 0  # > 0: LM head + cross-entropy in chunks of this many positions (no full logits)
    parallel: str = "ddp"  # ddp | fsdp (only used under torchrun with world size > 1)
    tensorboard: bool = False  # needs pip install 'prism-lm[tb]'; asked for and missing: a warning
    wandb: bool = False  # Weights & Biases (pip install wandb); WANDB_MODE=offline works without a network
    progress: bool = True  # a progress bar in a terminal; plain log lines otherwise, whatever this says

    def validate(self) -> None:
        if self.loss_chunk < 0:
            raise PrismError(f"run.loss_chunk must be >= 0 (0 = plain head), got {self.loss_chunk}")
        for name in ("max_iters", "batch_size", "grad_accum", "eval_interval", "eval_iters",
                     "log_interval", "checkpoint_interval", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise PrismError(f"run.{name} must be >= 1, got {getattr(self, name)}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise PrismError(f"run.dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if self.parallel not in ("ddp", "fsdp"):
            raise PrismError(f"run.parallel must be 'ddp' or 'fsdp', got {self.parallel!r}")
        if not 0 <= self.seed < 2**63:
            raise PrismError(f"run.seed must be in [0, 2^63), got {self.seed}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise PrismError(f"run.device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")


@dataclass
class WandbConfig:
    """Where a run logs in Weights & Biases (when ``run.wandb`` is true), in W&B's own words. W&B's
    environment variables win where they are set: WANDB_PROJECT, WANDB_ENTITY, WANDB_RUN_GROUP,
    WANDB_TAGS (comma-separated) and WANDB_DIR. None of these changes what a run computes."""

    project: str = "prism-lm"
    entity: str = ""  # "": the W&B account's default entity
    group: str = ""  # e.g. a sweep's name, to see its runs together
    tags: list[str] = field(default_factory=list)
    dir: str = ""  # "": the run directory

    def validate(self) -> None:
        if not self.project:
            raise PrismError("wandb.project must not be empty")
        if any(not t or "," in t for t in self.tags):
            raise PrismError(f"wandb.tags must be non-empty words without commas, got {self.tags!r}")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def validate(self) -> None:
        validate_model(self.model, allow_auto_vocab=True)
        for section in (self.data, self.optim, self.run, self.wandb):
            section.validate()

    def changed_keys(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """``section.key`` (``model.prism.key`` in a nested section) -> (value here, value in ``other``)
        for every key that differs."""
        mine, theirs = flatten(to_dict(self)), flatten(to_dict(other))
        return {key: (mine.get(key), value) for key, value in theirs.items() if mine.get(key) != value}


def resolve_vocab_size(configured: int, data_vocab: int | None) -> int:
    """The model's vocabulary: ``configured``, or for 0 ("from the data") the data's vocabulary
    rounded up to a multiple of 64 (for the matmuls). The one place this rule lives."""
    if configured == 0:
        if data_vocab is None:
            raise PrismError("model.vocab_size = 0 means 'from the data', but no prepared data was found "
                             "(set model.vocab_size or data.dir)")
        return (data_vocab + 63) // 64 * 64
    if data_vocab is not None and data_vocab > configured:
        raise PrismError(f"data vocabulary ({data_vocab}) is larger than model.vocab_size ({configured})")
    return configured


# --------------------------------------------------------------------------- dict <-> dataclass

def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise PrismError."""
    if not isinstance(data, dict):
        raise PrismError(f"{where or cls.__name__} must be a table, got {type(data).__name__}")
    if cls is ModelConfig:  # flat keys of earlier releases (a record's: job.json, config.json) move into sections
        data = upgrade_legacy_keys(data, where or "model", notify=False)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in known:
            raise PrismError(f"unknown config key {name!r} (known: {', '.join(sorted(known))})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value, name)
            continue
        if typing.get_origin(hint) is list and isinstance(value, str):  # --set wandb.tags=a,b: a comma list
            value = [part.strip() for part in value.split(",")]
        if not _type_ok(value, hint):
            type_name = getattr(hint, "__name__", str(hint))
            example = ' (a list: --set \'KEY=["a", "b"]\' or KEY=a,b)' if typing.get_origin(hint) is list else ""
            raise PrismError(f"config key {name!r} must be {type_name}, got {value!r}{example.replace('KEY', name)}")
        if hint is float:  # one finite-float rule and one 64-bit integer rule for every config value
            value = finite_float(value, f"config key {name!r}")
        elif hint is int:
            value = bounded_int(value, f"config key {name!r}", -INT64)
        kwargs[key] = value
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys: {"model": {"prism": {"m": 1}}} -> {"model.prism.m": 1}."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested dict (a copy is returned); a nested section is one
    more dot (``model.prism.lambda_start``), and the flat model keys of earlier releases are moved into
    theirs (``upgrade_legacy_path``)."""
    out = copy.deepcopy(data)
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path.strip():
            raise PrismError(f"--set expects section.key=value, got {item!r}")
        *sections, key = upgrade_legacy_path(path.strip().split("."))
        node = out
        for section in sections:
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise PrismError(f"--set {path}: {section!r} is not a section")
        node[key] = _parse_value(raw.strip())
    return out


PACKAGED_CONFIGS = Path(__file__).parent / "configs"


def resolve_config_path(path: str | Path) -> Path:
    """A TOML file, or the name of a config shipped with prism-lm (``prism-50m-tinystories``)."""
    path = Path(path)
    if path.is_file():
        return path
    packaged = PACKAGED_CONFIGS / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
    if path.parent == Path(".") and packaged.is_file():
        return packaged
    raise PrismError(f"config file not found: {path} (shipped configs: {', '.join(shipped_configs())})")


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.toml"))


def load_train_config(path: str | Path | None, overrides: list[str] | None = None,
                      notify_legacy: bool = True) -> TrainConfig:
    """Read a TOML file (or start from defaults when ``path`` is None), apply overrides, validate.
    A file's flat model keys of earlier releases get a notice, unless ``notify_legacy`` is False (a
    run's own recorded config: the user wrote nothing old)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PrismError(f"config file {path} is not valid TOML: {exc}") from None
        if isinstance(data.get("model"), dict):  # an old file's flat keys, before the overrides land on them
            data["model"] = upgrade_legacy_keys(data["model"], notify=notify_legacy)
    data = apply_overrides(data, overrides or [])
    cfg = from_dict(TrainConfig, data)
    cfg.validate()
    return cfg


def dump_toml(cfg: TrainConfig) -> str:
    """Write the resolved config as TOML (sections of scalars, a nested section such as
    ``[model.prism]`` after its parent's scalars, so no library is needed)."""
    lines: list[str] = []

    def table(name: str, values: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_scalar(value)}" for key, value in values.items() if not isinstance(value, dict))
        lines.append("")
        for key, value in values.items():
            if isinstance(value, dict):
                table(f"{name}.{key}", value)

    for section, values in to_dict(cfg).items():
        table(section, values)
    return "\n".join(lines)


def _toml_scalar(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_scalar(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
