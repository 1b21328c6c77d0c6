"""White-box numerics: RoPE non-resonance, subspace coherence, and coding rates.

Non-resonance (paper §2.3): the signal stream rotates pair i at ω_s,i = (10000 m)^(-i/(D/2)) and
the noise stream at ω_n,j = (10000/m)^(-j/(D/2)). Their cross-kernel over a window of W positions,

    K_SN(i, j) = (1/W) Σ_{τ=0}^{W-1} cos(ω_s,i τ) cos(ω_n,j τ),

is large when two frequencies resonate. We aggregate |K_SN| over the matched pairs (i = j) and
over all pairs (i, j); pair 0 (ω = 1 in both streams, whatever m) is left out, since no m can
separate it. m = 1 makes matched pairs identical: K is then the window mean of cos², about ½
for pairs that turn many times within the window and near 1 for slow pairs that barely turn.

Coherence: ‖W_s W_nᵀ‖₂ / (‖W_s‖₂ ‖W_n‖₂) for the signal and noise rows of U (the paper's
‖U_sᵀ U_n‖ with atoms as columns), 0 for orthogonal subspaces, 1 for a shared direction.

Coding rate (eqs. 3-4, CRATE's convention): for tokens Z (d x N),
R(Z) = ½ logdet(I + d/(N ε²) Z Zᵀ); for a dictionary of heads U_k (D x C),
R(Z | U) = Σ_k R(U_k Z); and ΔR = R(Z | U_s) − λ R(Z | U_n), measured on the LayerNorm'd input of
each PRISM attention layer.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from prism_lm.config import NAMED_MULTIPLIERS
from prism_lm.model import PrismLM
from prism_lm.model.attention import PrismAttention

NAMED_M = {**{k: v for k, v in NAMED_MULTIPLIERS.items()}, "3/2": 1.5, "2": 2.0, "3": 3.0, "1": 1.0}


def cross_kernel(m: float, head_dim: int, window: int, base: float = 10000.0) -> dict[str, float]:
    """Mean |K_SN| over matched pairs and over all pairs (pair 0 excluded) for multiplier m."""
    half = head_dim // 2
    i = np.arange(1, half)
    w_s = (base * m) ** (-i / half)
    w_n = (base / m) ** (-i / half)
    tau = np.arange(window)
    cs = np.cos(np.outer(w_s, tau))  # (P, W)
    cn = np.cos(np.outer(w_n, tau))
    k = cs @ cn.T / window  # (P, P): K_SN(i, j)
    return {"matched": float(np.abs(np.diag(k)).mean()), "all_pairs": float(np.abs(k).mean())}


def resonance_table(head_dim: int, windows: tuple[int, ...] = (128, 512, 2048), sweep: int = 121) -> dict:
    named = {name: {str(w): cross_kernel(m, head_dim, w) for w in windows} for name, m in NAMED_M.items()}
    ms = np.linspace(1.0, 4.0, sweep)
    curve = {str(w): [cross_kernel(float(m), head_dim, w)["matched"] for m in ms] for w in windows}
    return {"head_dim": head_dim, "windows": list(windows), "named": named,
            "named_values": {k: float(v) for k, v in NAMED_M.items()}, "sweep_m": ms.tolist(), "sweep": curve}


def coherence(attn: PrismAttention) -> float | None:
    if attn.n_streams < 2:
        return None
    W = attn.u_proj.weight.detach().float()
    half = W.shape[0] // 2
    ws, wn = W[:half], W[half:]
    cross = torch.linalg.matrix_norm(ws @ wn.T, ord=2)
    return float(cross / (torch.linalg.matrix_norm(ws, ord=2) * torch.linalg.matrix_norm(wn, ord=2)))


def model_coherence(model: PrismLM) -> list[float | None]:
    return [coherence(b.attn) if isinstance(b.attn, PrismAttention) else None for b in model.blocks]


def coding_rate(Z: torch.Tensor, eps: float = 0.5) -> float:
    """R(Z) = ½ logdet(I + d/(N ε²) Z Zᵀ) for Z (d, N)."""
    d, n = Z.shape
    gram = Z @ Z.T if d <= n else Z.T @ Z  # logdet(I + c A Aᵀ) = logdet(I + c Aᵀ A)
    eye = torch.eye(gram.shape[0], dtype=Z.dtype)
    return 0.5 * float(torch.logdet(eye + (d / (n * eps * eps)) * gram))


@torch.no_grad()
def layer_coding_rates(model: PrismLM, idx: torch.Tensor, eps: float = 0.5) -> list[dict]:
    """Per layer: R(Z) of the attention input and, for PRISM, R(Z|U_s), R(Z|U_n) and ΔR."""
    model.eval()
    inputs = []
    hooks = [b.attn.register_forward_hook(lambda mod, args, kw, out: inputs.append(args[0]), with_kwargs=True)
             for b in model.blocks]
    try:
        model(idx)
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for layer, (block, z) in enumerate(zip(model.blocks, inputs, strict=True)):
        Z = z.reshape(-1, z.shape[-1]).double().T  # (C, N)
        row = {"layer": layer, "R": coding_rate(Z, eps)}
        attn = block.attn
        if isinstance(attn, PrismAttention):
            U = attn.u_proj.weight.detach().double().view(attn.n_streams, attn.n_head, attn.head_dim, -1)
            per_stream = [sum(coding_rate(U[s, k] @ Z, eps) for k in range(attn.n_head))
                          for s in range(attn.n_streams)]
            lam = float(attn.current_lambda().detach())
            row.update({"R_signal": per_stream[0], "lambda": lam})
            if attn.n_streams == 2:
                row.update({"R_noise": per_stream[1], "delta_R": per_stream[0] - lam * per_stream[1]})
        rows.append(row)
    return rows


def named_multiplier(value: float) -> str:
    for name, m in NAMED_M.items():
        if math.isclose(m, value, rel_tol=1e-9):
            return name
    return f"{value:g}"
