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

import torch.nn.functional as F
from torch import nn

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
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


MLP_KINDS: dict[str, type[MLPKind]] = {kind.name: kind for kind in (GeluMLP,)}
