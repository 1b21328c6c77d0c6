"""The interface every MLP kind implements: what each block runs after attention.

Every kind is an ``MLPKind``: it maps (B, T, C) -> (B, T, C) and declares what the rest of
prism-lm asks of it: its config checks (``check_config``), its init (``reset_parameters``, after
the model's generic N(0, 0.02) pass), its matmuls per token (``matmuls``, for the FLOP count) and
whether the block adds its output to the residual stream (``residual = True``, GPT-2's MLP) or
replaces the stream by it (``residual = False``, as CRATE's ISTA block does). Each kind has its own
file in this package; ``MLP_KINDS`` (``__init__.py``) is the registry that config checks, the block,
the FLOP count and the tests read: adding a kind is a file here, listed there, plus its tests.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

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
