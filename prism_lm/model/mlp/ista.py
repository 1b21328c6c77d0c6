"""CRATE's ISTA block (``ista``), its knobs in ``[model.ista]``."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from prism_lm.model.config import ModelConfig
from prism_lm.model.mlp.common import MLPKind


class IstaMLP(MLPKind):
    """CRATE's ISTA block (Yu et al., JMLR 2024): one step of sparse coding as the MLP.

    With a learned dictionary D (C x C, CRATE's ``weight``) the block takes one proximal-gradient
    (ISTA) step of the LASSO ``min_a ½‖z − D a‖² + λ‖a‖₁, a ≥ 0`` from a = z:

        ista(z) = ReLU(z + η (Dᵀz − DᵀD z) − η λ)        z (B, T, C) -> (B, T, C)

    written as CRATE writes it with ``F.linear`` (so that a CRATE checkpoint's ``weight`` means the
    same here): ``x1 = F.linear(z, W)``, ``DᵀD z = F.linear(x1, Wᵀ)``, ``Dᵀz = F.linear(z, Wᵀ)``.
    Design choices:
    - η (``step_size``) and λ (``l1_weight``) are ``[model.ista]`` keys (``model.config.IstaConfig``)
      with CRATE's values (0.1, 0.1), constants, as in CRATE.
    - ``mode = "replace"``: the block's output replaces the residual stream, CRATE's wiring
      (``x = ista(ln(x))``); ``"residual"``: it is added (``x = x + ista(ln(x))``), so that the block
      drops into PRISM's pre-LN residual block unchanged.
    - Init as CRATE: Kaiming-uniform dictionary (the model's generic N(0, 0.02) pass does not touch a
      bare parameter). No bias, no dropout (CRATE has neither here).
    - The ReLU's output is the sparse code: ``hook_code`` (an identity until hooked) exposes it, and the
      fraction of exact zeros in it is the block's sparsity (``analysis``).
    """

    name: ClassVar[str] = "ista"

    @classmethod
    def matmuls(cls, cfg: ModelConfig) -> list[tuple[int, int]]:
        return [(cfg.n_embd, cfg.n_embd)] * 3  # the dictionary three times: W z, (W z) W, z W

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cfg.n_embd, cfg.n_embd))  # the dictionary, CRATE's name
        self.step_size, self.lambd = float(cfg.ista.step_size), float(cfg.ista.l1_weight)
        self.residual = cfg.ista.mode == "residual"
        self.hook_code = nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight)

    def forward(self, z):  # (B, T, C) -> (B, T, C), nonnegative
        w = self.weight.to(z.dtype)
        dtd_z = F.linear(F.linear(z, w), w.t())  # DᵀD z
        dt_z = F.linear(z, w.t())  # Dᵀ z
        return self.hook_code(F.relu(z + self.step_size * (dt_z - dtd_z) - self.step_size * self.lambd))
