"""White-box numerics: RoPE non-resonance, subspace coherence, and coding rates.

Non-resonance (paper §2.3): the signal stream rotates pair i at ω_s,i = (b m)^(-i/(D/2)) and
the noise stream at ω_n,j = (b/m)^(-j/(D/2)), b = ``model.rope_base`` (10000); the bases come from
``PrismAttention.rope_bases`` and the frequencies from ``rope.inv_frequencies``, the model's own
formula. Their cross-kernel over a window of W positions,

    K_SN(i, j) = (1/W) Σ_{τ=0}^{W-1} cos(ω_s,i τ) cos(ω_n,j τ),

is large when two frequencies resonate. We aggregate |K_SN| over the matched pairs (i = j) and
over all pairs (i, j); pair 0 (ω = 1 in both streams, whatever m) is left out, since no m can
separate it. m = 1 makes matched pairs identical: K is then the window mean of cos², about ½
for pairs that turn many times within the window and near 1 for slow pairs that barely turn.
K_SN is **first order**: it tends to 0 for any two different frequencies, so it cannot tell a
rational m from an irrational one. The conjecture is about higher orders, which
``near_resonances`` counts: pairs (i, j) of frequencies that both turn at least once in the window
and small integers n, k <= 3 with |n ω_s,i − k ω_n,j| · W < 2π (the combination does not complete a
turn within W tokens, so the two look locked), as a function of m.
The empirical counterpart from a trained model is ``heads.head_statistics``'s logit-lag
correlation: each head's pre-softmax logit as a function of lag, signal head h against noise head h.

Coherence: ‖W_s W_nᵀ‖₂ / (‖W_s‖₂ ‖W_n‖₂) for the signal and noise rows of U (the paper's
‖U_sᵀ U_n‖ with atoms as columns), 0 for orthogonal subspaces, 1 for a shared direction.

Coding rate (eqs. 3-4, CRATE's convention): for tokens Z (d x N),
R(Z) = ½ logdet(I + d/(N ε²) Z Zᵀ); for a dictionary of heads U_k (D x C),
R(Z | U) = Σ_k R(U_k Z); and ΔR = R(Z | U_s) − λ R(Z | U_n), measured on the LayerNorm'd input of
each PRISM attention layer. R grows with the scale of Z and U (doubling Z takes a 4-layer tiny
model's R from 17.3 to 21.5), so ``attention_step_rates`` uses a **scale-normalised** ΔR: every token
on the unit sphere and every head's U_k rescaled to ‖U_k‖_F² = D (the orthogonal init's scale),
with U and λ fixed to the layer's own. It tests what the paper derives, that the attention update
is a gradient-ascent step on ΔR: for each window and layer, ΔR of the attention's input Z and of
Z + attention(Z), and the fraction of windows where it rises.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from prism_lm.model import PrismLM
from prism_lm.model.attention import PrismAttention
from prism_lm.model.config import NAMED_MULTIPLIERS, ModelConfig, resolve_multiplier
from prism_lm.model.rope import inv_frequencies

# the named irrationals, and the rationals to hold them against
NAMED_M = {**NAMED_MULTIPLIERS, **{name: resolve_multiplier(name) for name in ("3/2", "2", "3", "1")}}


def cross_kernel(signal_base: float, noise_base: float, head_dim: int, window: int) -> dict[str, float]:
    """Mean |K_SN| over matched pairs and over all pairs (pair 0 excluded) for two RoPE bases."""
    w_s = inv_frequencies(head_dim, signal_base, torch.float64).numpy()[1:]
    w_n = inv_frequencies(head_dim, noise_base, torch.float64).numpy()[1:]
    tau = np.arange(window)
    cs = np.cos(np.outer(w_s, tau))  # (P, W)
    cn = np.cos(np.outer(w_n, tau))
    k = cs @ cn.T / window  # (P, P): K_SN(i, j)
    return {"matched": float(np.abs(np.diag(k)).mean()), "all_pairs": float(np.abs(k).mean())}


def stream_bases(cfg: ModelConfig, m: float) -> tuple[float, float]:
    """The (signal, noise) RoPE bases a PRISM of ``cfg``'s shape would use with multiplier m."""
    signal, noise = PrismAttention.rope_bases(dataclasses.replace(cfg, freq_multiplier=float(m), noise_stream=True))
    return signal, noise


def resonance_table(cfg: ModelConfig, windows: tuple[int, ...] = (128, 512, 2048), sweep: int = 121) -> dict:
    """|K_SN| for the named multipliers and a sweep of m in [1, 4], at ``cfg``'s head dim and rope_base."""
    def kernel(m: float, w: int) -> dict[str, float]:
        return cross_kernel(*stream_bases(cfg, m), cfg.head_dim, w)

    def locked(m: float, w: int) -> int:
        return near_resonances(*stream_bases(cfg, m), cfg.head_dim, w)

    named = {name: {str(w): {**kernel(m, w), "near_resonances": locked(m, w)} for w in windows}
             for name, m in NAMED_M.items()}
    ms = np.linspace(1.0, 4.0, sweep)
    curve = {str(w): [kernel(float(m), w)["matched"] for m in ms] for w in windows}
    locked_curve = {str(w): [locked(float(m), w) for m in ms] for w in windows}
    return {"head_dim": cfg.head_dim, "rope_base": cfg.rope_base, "windows": list(windows), "named": named,
            "named_values": {k: float(v) for k, v in NAMED_M.items()}, "sweep_m": ms.tolist(), "sweep": curve,
            "sweep_near_resonances": locked_curve,
            "what": "first-order |K_SN| cannot tell rational from irrational m; near_resonances counts frequency "
                    "pairs locked within the window by |n ω_s − k ω_n|·W < 2π, n, k <= 3"}


def near_resonances(signal_base: float, noise_base: float, head_dim: int, window: int, max_order: int = 3) -> int:
    """Pairs (i, j) of turning frequencies locked within ``window`` by some n, k <= ``max_order``."""
    w_s = inv_frequencies(head_dim, signal_base, torch.float64).numpy()[1:]
    w_n = inv_frequencies(head_dim, noise_base, torch.float64).numpy()[1:]
    turn = 2 * np.pi / window
    w_s, w_n = w_s[w_s >= turn], w_n[w_n >= turn]  # a frequency that never turns in W cannot resonate
    orders = np.arange(1, max_order + 1)
    combos = np.abs(orders[:, None, None, None] * w_s[None, None, :, None]
                    - orders[None, :, None, None] * w_n[None, None, None, :])  # (n, k, i, j)
    return int((combos * window < 2 * np.pi).any(axis=(0, 1)).sum())


def coherence(attn: PrismAttention) -> float | None:
    if attn.n_streams < 2:
        return None
    U = attn.dictionary().detach().float()  # (S, H, D, C)
    ws, wn = U[0].reshape(-1, U.shape[-1]), U[1].reshape(-1, U.shape[-1])
    cross = torch.linalg.matrix_norm(ws @ wn.T, ord=2)
    return float(cross / (torch.linalg.matrix_norm(ws, ord=2) * torch.linalg.matrix_norm(wn, ord=2)))


def _normalised_cross(ws: torch.Tensor, wn: torch.Tensor) -> float:
    cross = torch.linalg.matrix_norm(ws @ wn.T, ord=2)
    return float(cross / (torch.linalg.matrix_norm(ws, ord=2) * torch.linalg.matrix_norm(wn, ord=2)))


def head_pair_coherence(attn: PrismAttention) -> list[float] | None:
    """Coherence of signal head h's rows against noise head h's rows, for each h."""
    if attn.n_streams < 2:
        return None
    U = attn.dictionary().detach().float()  # (S, H, D, C)
    return [_normalised_cross(U[0, h], U[1, h]) for h in range(attn.n_head)]


@torch.no_grad()
def coherence_floor(cfg: ModelConfig, seeds: int = 4) -> float:
    """Mean coherence of freshly (orthogonally) initialised dictionaries of ``cfg``'s shape.

    With R >= 1 each stream alone has at least C rows and spans the whole space, so the whole-stream
    coherence stays far from 0 at init; only streams that shrink to complementary subspaces reach 0.
    This is the value training starts from, for comparison.
    """
    values = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        attn = PrismAttention(dataclasses.replace(cfg, noise_stream=True), 0)
        attn.reset_parameters()
        values.append(coherence(attn))
    return float(np.mean(values))


def model_coherence(model: PrismLM) -> list[float | None]:
    return [coherence(b.attn) if isinstance(b.attn, PrismAttention) else None for b in model.blocks]


def coding_rate(Z: torch.Tensor, eps: float = 0.5) -> float:
    """R(Z) = ½ logdet(I + d/(N ε²) Z Zᵀ) for Z (d, N)."""
    d, n = Z.shape
    gram = Z @ Z.T if d <= n else Z.T @ Z  # logdet(I + c A Aᵀ) = logdet(I + c Aᵀ A)
    eye = torch.eye(gram.shape[0], dtype=Z.dtype)
    return 0.5 * float(torch.logdet(eye + (d / (n * eps * eps)) * gram))


def _attention_io(model: PrismLM, idx: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: the attention's input (the LayerNorm'd residual stream) and its output, in eval mode."""
    model.eval()
    seen = []
    hooks = [b.attn.register_forward_hook(lambda mod, args, kw, out: seen.append((args[0], out[0])), with_kwargs=True)
             for b in model.blocks]
    try:
        model(idx)
    finally:
        for h in hooks:
            h.remove()
    return seen


@torch.no_grad()
def layer_coding_rates(model: PrismLM, idx: torch.Tensor, eps: float = 0.5) -> list[dict]:
    """Per layer: R(Z) of the attention input and, for PRISM, R(Z|U_s), R(Z|U_n) and ΔR."""
    rows = []
    for layer, (block, (z, _)) in enumerate(zip(model.blocks, _attention_io(model, idx), strict=True)):
        Z = z.reshape(-1, z.shape[-1]).double().T  # (C, N)
        row = {"layer": layer, "R": coding_rate(Z, eps)}
        attn = block.attn
        if isinstance(attn, PrismAttention):
            U = attn.dictionary().detach().double()  # (S, H, D, C)
            per_stream = [sum(coding_rate(U[s, k] @ Z, eps) for k in range(attn.n_head))
                          for s in range(attn.n_streams)]
            lam = float(attn.current_lambda().detach())
            row.update({"R_signal": per_stream[0], "lambda": lam})
            if attn.n_streams == 2:
                row.update({"R_noise": per_stream[1], "delta_R": per_stream[0] - lam * per_stream[1]})
        rows.append(row)
    return rows


def normalised_delta_r(Z: torch.Tensor, U: torch.Tensor, lam: float, eps: float = 0.5) -> float:
    """Scale-free ΔR = R(Z|U_s) − λ R(Z|U_n) for tokens Z (N, C) and U (streams, heads, D, C):
    tokens on the unit sphere, each U_k scaled to ‖U_k‖_F² = D."""
    Z = Z / Z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    D = U.shape[2]
    U = U * (D ** 0.5 / U.flatten(2).norm(dim=-1).clamp_min(1e-12))[..., None, None]
    rates = [sum(coding_rate(U[s, k] @ Z.T, eps) for k in range(U.shape[1])) for s in range(U.shape[0])]
    return rates[0] - lam * rates[1] if len(rates) > 1 else rates[0]


@torch.no_grad()
def attention_step_rates(model: PrismLM, idx: torch.Tensor, eps: float = 0.5) -> list[dict] | None:
    """Per PRISM layer: mean scale-normalised ΔR of each window's attention input Z and of
    Z + attention(Z) (U and λ the layer's own), and the fraction of windows where it rises."""
    if not all(isinstance(b.attn, PrismAttention) for b in model.blocks):
        return None
    rows = []
    for layer, (block, (z, update)) in enumerate(zip(model.blocks, _attention_io(model, idx), strict=True)):
        U = block.attn.dictionary().detach().double()
        lam = float(block.attn.current_lambda().detach())
        before = [normalised_delta_r(z[b].double(), U, lam, eps) for b in range(z.shape[0])]
        after = [normalised_delta_r((z[b] + update[b]).double(), U, lam, eps) for b in range(z.shape[0])]
        rows.append({"layer": layer, "delta_R_in": float(np.mean(before)), "delta_R_out": float(np.mean(after)),
                     "rises": float(np.mean([a > b for a, b in zip(after, before, strict=True)])),
                     "windows": len(before)})
    return rows
