"""The MLP kinds behind one interface: what each block runs after attention.

Every kind is an ``MLPKind``: it maps (B, T, C) -> (B, T, C) and declares what the rest of
prism-lm asks of it: its config checks (``check_config``), its init (``reset_parameters``, after
the model's generic N(0, 0.02) pass), its matmuls per token (``matmuls``, for the FLOP count) and
whether the block adds its output to the residual stream (``residual = True``, GPT-2's MLP) or
replaces the stream by it (``residual = False``, as CRATE's ISTA block does). ``MLP_KINDS`` at the
end is the registry that config, the block, the FLOP count and the tests read: adding a kind is a
class here (or in its own file, listed below) plus its tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from prism_lm.errors import PrismError
from prism_lm.model.dropout import Dropout

if TYPE_CHECKING:
    from prism_lm.model.config import ModelConfig


class MLPKind(nn.Module):
    """The interface of an MLP kind. Subclasses set ``name`` and implement ``forward``."""

    name: ClassVar[str]
    residual: ClassVar[bool] = True  # x + mlp(ln(x)); False: mlp(ln(x)) replaces x

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        """Raise PrismError when ``cfg`` does not suit this kind."""

    @classmethod
    def matmuls(cls, cfg: ModelConfig) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of every weight matmul one token goes through, a weight used twice listed twice."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """Kind-specific init, run after the model's generic N(0, 0.02) pass."""


class GeluMLP(MLPKind):
    """GPT-2's MLP: C -> 4C, GELU, 4C -> C, dropout; the output projection is a residual projection."""

    name = "gelu"

    @classmethod
    def matmuls(cls, cfg: ModelConfig) -> list[tuple[int, int]]:
        return [(cfg.n_embd, 4 * cfg.n_embd), (4 * cfg.n_embd, cfg.n_embd)]

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.c_proj.is_residual_projection = True
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


ISTA_MODES = ("replace", "residual")


class IstaMLP(MLPKind):
    """CRATE's ISTA block (Yu et al., JMLR 2024): one step of sparse coding as the MLP.

    With a learned dictionary D (C x C, CRATE's ``weight``) the block takes one proximal-gradient
    (ISTA) step of the LASSO ``min_a ½‖z − D a‖² + λ‖a‖₁, a ≥ 0`` from a = z:

        ista(z) = ReLU(z + η (Dᵀz − DᵀD z) − η λ)        z (B, T, C) -> (B, T, C)

    written as CRATE writes it with ``F.linear`` (so that a CRATE checkpoint's ``weight`` means the
    same here): ``x1 = F.linear(z, W)``, ``DᵀD z = F.linear(x1, Wᵀ)``, ``Dᵀz = F.linear(z, Wᵀ)``.
    Design choices:
    - η (``ista_step_size``) and λ (``ista_lambda``) are config keys with CRATE's values (0.1, 0.1),
      constants, as in CRATE.
    - ``ista_mode = "replace"``: the block's output replaces the residual stream, CRATE's wiring
      (``x = ista(ln(x))``); ``"residual"``: it is added (``x = x + ista(ln(x))``), so that the block
      drops into PRISM's pre-LN residual block unchanged.
    - Init as CRATE: Kaiming-uniform dictionary (the model's generic N(0, 0.02) pass does not touch a
      bare parameter). No bias, no dropout (CRATE has neither here).
    - The ReLU's output is the sparse code: ``hook_code`` (an identity until hooked) exposes it, and the
      fraction of exact zeros in it is the block's sparsity (``analysis``).
    """

    name: ClassVar[str] = "ista"

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        if cfg.ista_mode not in ISTA_MODES:
            raise PrismError(f"model.ista_mode must be one of {ISTA_MODES}, got {cfg.ista_mode!r}")
        for key in ("ista_step_size", "ista_lambda"):
            value = getattr(cfg, key)
            if not (isinstance(value, (int, float)) and value >= 0 and value == value and value != float("inf")):
                raise PrismError(f"model.{key} must be a finite number >= 0, got {value!r}")

    @classmethod
    def matmuls(cls, cfg: ModelConfig) -> list[tuple[int, int]]:
        return [(cfg.n_embd, cfg.n_embd)] * 3  # the dictionary three times: W z, (W z) W, z W

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cfg.n_embd, cfg.n_embd))  # the dictionary, CRATE's name
        self.step_size, self.lambd = float(cfg.ista_step_size), float(cfg.ista_lambda)
        self.residual = cfg.ista_mode == "residual"
        self.hook_code = nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight)

    def forward(self, z):  # (B, T, C) -> (B, T, C), nonnegative
        w = self.weight.to(z.dtype)
        dtd_z = F.linear(F.linear(z, w), w.t())  # DᵀD z
        dt_z = F.linear(z, w.t())  # Dᵀ z
        return self.hook_code(F.relu(z + self.step_size * (dt_z - dtd_z) - self.step_size * self.lambd))


MLP_KINDS: dict[str, type[MLPKind]] = {kind.name: kind for kind in (GeluMLP, IstaMLP)}
