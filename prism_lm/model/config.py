"""The model's config: the shared fields, and one nested section per kind with knobs of its own.

    [model]            attention, mlp, widths, depth, context, vocabulary, dropout, bias, rope_base, ...
    [model.prism]      PRISM's attention: R, m and its RoPE scaling, the noise stream, λ, the tied output
    [model.ista]       CRATE's ISTA block (mlp = "ista"): step size η, L1 weight, replace or residual
    [model.gpt]        GPT's attention: its output scale (1, nanoGPT's; PRISM's 1/sqrt(2HR) as a control)

Design choices:
- The defaults are the paper's PRISM. A section's knobs are validated by its own dataclass
  (``PrismConfig.validate``, ``IstaConfig.validate``); the shape checks that need the kinds
  (``check_config`` of each kind, RoPE against the position embedding) are the registry's,
  ``prism_lm.model.kinds.validate_model``. So this module imports no kind, and every kind may
  import it: the model package has no import circle.
- ``rope_base`` is shared: every kind with RoPE (PRISM, GPT-RoPE, DIFF) reads it.
- ``freq_multiplier`` keeps what the user wrote ("pi", "22/7", 3.0): that is what config files,
  checkpoints and sweep identities record. Its value is resolved once per value, by
  ``PrismConfig.multiplier``; the layers read that and never parse.
- ``rope_scaling`` (``ROPE_SCALINGS``) exists to test the paper's conjecture where it can be
  tested: only "frequency" makes the cross-stream ratios depend on m alone, so that rational and
  irrational m differ in kind.
- ``lambda_schedule`` names how λ moves (``LAMBDA_SCHEDULES``); only ``"learned"`` concerns the
  model, which then holds λ as parameters. The values λ(t) are training's (``train/schedules.py``).
- The flat keys of earlier releases (``model.freq_multiplier``, ``model.ista_mode``, ...) still load,
  from TOML, ``--set``, experiment files and old checkpoints' config.json, translated by
  ``upgrade_legacy_keys`` with a one-line notice per key (``LEGACY_KEYS``). A sweep identity hashes
  the flat names (``flat_legacy_dict``), so runs planned before the sections existed keep their folders.
- This module imports only ``errors`` (the Hugging Face export copies it as it is).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from prism_lm.errors import PrismError, warn

LEARNED_LAMBDA = "learned"
LAMBDA_SCHEDULES = ("cosine", "constant", LEARNED_LAMBDA)
POSITION_EMBEDDINGS = ("learned", "none")
# How PRISM's multiplier m reaches the two streams' RoPE frequencies (inv_freq_i = b^(-i/(D/2)), b = rope_base)
ROPE_SCALINGS = {
    "base": "the official π-RoPE: signal base b·m, noise base b/m; pair i's ratio ω_s/ω_n is m^(-2i/(D/2)), "
            "so pair 0 turns at 1 rad/token in both streams whatever m is",
    "frequency": "one ladder of base b; signal frequencies times m, noise frequencies divided by m, so every "
                 "matched ratio ω_s/ω_n is exactly m² (rational for m = √2, √(3/2), ...; π² for π)",
}
NAMED_MULTIPLIERS = {
    "pi": math.pi,
    "phi": (1.0 + math.sqrt(5.0)) / 2.0,
    "e": math.e,
    "sqrt2": math.sqrt(2.0),
}
ISTA_MODES = ("replace", "residual")


def resolve_multiplier(value: float | str) -> float:
    """The RoPE frequency multiplier m as a float: a number, a name (pi, phi, e, sqrt2) or "p/q"."""
    if isinstance(value, bool):
        raise PrismError(f"freq_multiplier must be a number or a name, got {value!r}")
    if isinstance(value, (int, float)):
        m = float(value)
    elif value in NAMED_MULTIPLIERS:
        m = NAMED_MULTIPLIERS[value]
    else:
        try:
            num, _, den = str(value).partition("/")
            m = float(num) / float(den) if den else float(num)
        except (ValueError, ZeroDivisionError):
            names = ", ".join(NAMED_MULTIPLIERS)
            raise PrismError(
                f"freq_multiplier {value!r} is not a number, a fraction p/q, or one of {names}"
            ) from None
    if not (m > 0 and math.isfinite(m)):
        raise PrismError(f"freq_multiplier must be a finite number > 0, got {value!r}")
    return m


def _finite_at_least(where: str, value: Any, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= low):
        raise PrismError(f"{where} must be a finite number >= {low:g}, got {value!r}")


@dataclass
class PrismConfig:
    """``[model.prism]``: the knobs of PRISM's attention (``model/attention/prism.py``)."""

    expansion_ratio: int = 2  # R: each head's dictionary width D = (C/H)·R
    freq_multiplier: float | str = "pi"  # m: a number, pi | phi | e | sqrt2, or "p/q"
    rope_scaling: str = "base"  # base: bases rope_base·m and rope_base/m (official) | frequency (ROPE_SCALINGS)
    noise_stream: bool = True
    lambda_schedule: str = "cosine"  # cosine | constant | learned (λ(t): train/schedules.py)
    lambda_start: float = 0.01
    lambda_end: float = 0.1
    tied_output: bool = True  # W_O = U^T (paper) or a separate learned projection (CRATE)

    def validate(self) -> None:
        if self.expansion_ratio < 1:
            raise PrismError(f"model.prism.expansion_ratio must be >= 1, got {self.expansion_ratio}")
        if not all(math.isfinite(v) for v in (self.lambda_start, self.lambda_end)):
            raise PrismError(f"model.prism.lambda_start and lambda_end must be finite, got {self.lambda_start}, "
                             f"{self.lambda_end}")
        if self.lambda_schedule not in LAMBDA_SCHEDULES:
            raise PrismError(f"model.prism.lambda_schedule must be one of {LAMBDA_SCHEDULES}, "
                             f"got {self.lambda_schedule!r}")
        if self.rope_scaling not in ROPE_SCALINGS:
            raise PrismError(f"model.prism.rope_scaling must be one of {tuple(ROPE_SCALINGS)}, "
                             f"got {self.rope_scaling!r}")
        self._multiplier = (self.freq_multiplier, resolve_multiplier(self.freq_multiplier))

    @property
    def multiplier(self) -> float:
        """m as a float, resolved once per value of ``freq_multiplier``."""
        cached = getattr(self, "_multiplier", None)
        if cached is None or cached[0] != self.freq_multiplier:
            self._multiplier = cached = (self.freq_multiplier, resolve_multiplier(self.freq_multiplier))
        return cached[1]

    @property
    def learns_lambda(self) -> bool:
        """λ is the model's parameters (``lambda_schedule = "learned"``), not a value training writes in."""
        return self.lambda_schedule == LEARNED_LAMBDA


@dataclass
class IstaConfig:
    """``[model.ista]``: the knobs of CRATE's ISTA block (``model/mlp/ista.py``), CRATE's values."""

    step_size: float = 0.1  # η
    l1_weight: float = 0.1  # the sparsity weight λ of the L1 term (CRATE's ``lambd``)
    mode: str = "replace"  # replace: ista(ln(x)) replaces the stream (CRATE) | residual: x + ista(ln(x))

    def validate(self) -> None:
        if self.mode not in ISTA_MODES:
            raise PrismError(f"model.ista.mode must be one of {ISTA_MODES}, got {self.mode!r}")
        for key in ("step_size", "l1_weight"):
            _finite_at_least(f"model.ista.{key}", getattr(self, key), 0.0)


@dataclass
class GptConfig:
    """``[model.gpt]``: the knob of GPT's attention (``gpt``, ``gpt-rope``; ``model/attention/gpt.py``)."""

    # the attention output times this (1: nanoGPT's). 1/sqrt(2·H·R) gives GPT PRISM's output scale, the
    # control that tells PRISM's gradient scale from the rest of its attention (C2)
    output_scale: float = 1.0

    def validate(self) -> None:
        if not (self.output_scale > 0 and math.isfinite(self.output_scale)):
            raise PrismError(f"model.gpt.output_scale must be a finite number > 0, got {self.output_scale}")


SECTIONS = {"prism": PrismConfig, "ista": IstaConfig, "gpt": GptConfig}  # the nested sections and their dataclasses


@dataclass
class ModelConfig:
    """Architecture. Defaults: the paper's PRISM (8 layers, 8 heads, C=512, T=512)."""

    attention: str = "prism"  # a kind of prism_lm.model.ATTENTION_KINDS: prism | gpt | gpt-rope | diff | crate
    mlp: str = "gelu"  # a kind of prism_lm.model.MLP_KINDS: gelu | ista
    position_embedding: str = "learned"  # learned (wpe, as GPT-2 and the paper) | none (RoPE kinds only)
    n_layer: int = 8
    n_head: int = 8  # PRISM: heads per stream; DIFF: differential heads (each two maps)
    n_embd: int = 512
    block_size: int = 512
    vocab_size: int = 50304  # 0 in a training config: the data's vocabulary (resolve_vocab_size)
    dropout: float = 0.1
    bias: bool = False  # biases in LayerNorm and MLP (and GPT/DIFF projections)
    rope_base: float = 10000.0  # b of every kind with RoPE (PRISM's streams scale it by m)
    final_norm: bool = True  # a LayerNorm before the LM head (GPT-2, PRISM); CRATE's LM has none
    prism: PrismConfig = field(default_factory=PrismConfig)
    ista: IstaConfig = field(default_factory=IstaConfig)
    gpt: GptConfig = field(default_factory=GptConfig)

    def validate(self, allow_auto_vocab: bool = False) -> None:
        """The shared fields and every section's own knobs; the kinds' shape checks are
        ``prism_lm.model.kinds.validate_model``'s (which calls this first)."""
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise PrismError(f"model.position_embedding must be one of {POSITION_EMBEDDINGS}, "
                             f"got {self.position_embedding!r}")
        if self.vocab_size < (0 if allow_auto_vocab else 1):
            raise PrismError(f"model.vocab_size must be >= 1 (0 = from the data in training), got {self.vocab_size}")
        for name in ("n_layer", "n_head", "n_embd", "block_size"):
            if getattr(self, name) < 1:
                raise PrismError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise PrismError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise PrismError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not (self.rope_base > 0 and math.isfinite(self.rope_base)):
            raise PrismError(f"model.rope_base must be a finite number > 0, got {self.rope_base}")
        for name in SECTIONS:
            getattr(self, name).validate()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelConfig:
        """A config from its JSON form (a checkpoint's or an export's), flat keys of old releases too."""
        data = upgrade_legacy_keys(data)
        sections = {name: SECTIONS[name](**data.get(name, {})) for name in SECTIONS}
        return cls(**{**data, **sections})


def with_prism(cfg: ModelConfig, **changes: Any) -> ModelConfig:
    """A copy of ``cfg`` whose ``[model.prism]`` section has ``changes`` (the analysis' what-ifs)."""
    return replace(cfg, prism=replace(cfg.prism, **changes))


# --------------------------------------------------------------------------- keys of earlier releases

LEGACY_KEYS = {  # flat key of earlier releases -> (section, key)
    **{key: ("prism", key) for key in ("expansion_ratio", "freq_multiplier", "rope_scaling", "noise_stream",
                                       "lambda_schedule", "lambda_start", "lambda_end", "tied_output")},
    "ista_step_size": ("ista", "step_size"), "ista_lambda": ("ista", "l1_weight"), "ista_mode": ("ista", "mode"),
}
_NOTIFIED: set[str] = set()


def upgrade_legacy_keys(data: dict[str, Any], where: str = "model", notify: bool = True) -> dict[str, Any]:
    """``data`` (one model table: a file's, a checkpoint's) with its flat keys of earlier releases moved
    into their sections; a one-line notice per key and process. A key given both ways in one table is
    a one-line error (which would win is not said). ``--set`` paths are ``upgrade_legacy_path``'s."""
    old = [key for key in data if key in LEGACY_KEYS]
    if not old:
        return data
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items() if k not in LEGACY_KEYS}
    for key in old:
        section, new = LEGACY_KEYS[key]
        table = out.setdefault(section, {})
        if not isinstance(table, dict):
            raise PrismError(f"{where}.{section} must be a table, got {table!r}")
        if new in table:
            raise PrismError(f"{where}.{key} and {where}.{section}.{new} are the same key: give it once")
        table[new] = data[key]
        if notify:
            _notify(where, key)
    return out


def upgrade_legacy_path(parts: list[str]) -> list[str]:
    """A ``--set`` path (``["model", "freq_multiplier"]``) with a flat key of earlier releases moved into its
    section (``["model", "prism", "freq_multiplier"]``), with the same notice; other paths unchanged."""
    if len(parts) == 2 and parts[0] == "model" and parts[1] in LEGACY_KEYS:
        _notify("model", parts[1])
        return ["model", *LEGACY_KEYS[parts[1]]]
    return parts


def _notify(where: str, key: str) -> None:
    if key not in _NOTIFIED:
        _NOTIFIED.add(key)
        section, new = LEGACY_KEYS[key]
        warn(f"{where}.{key} is now {where}.{section}.{new} (the old name works for one more release)")


def flat_legacy_dict(cfg: ModelConfig) -> dict[str, Any]:
    """The config as one flat table under the key names of earlier releases (what sweep identities hash)."""
    flat = asdict(cfg)
    sections = {name: flat.pop(name) for name in SECTIONS}
    for old, (section, new) in LEGACY_KEYS.items():
        flat[old] = sections[section][new]
    named = set(LEGACY_KEYS.values())
    for section, values in sections.items():  # knobs newer than the sections: section_key
        flat.update({f"{section}_{key}": v for key, v in values.items() if (section, key) not in named})
    return flat
