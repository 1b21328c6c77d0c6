"""White-box numerics: RoPE non-resonance, subspace coherence, and coding rates.

Non-resonance (paper §2.3). Under ``model.rope_scaling = "base"`` (the official code) the signal
stream rotates pair i at ω_s,i = (b m)^(-i/(D/2)) and the noise stream at ω_n,j = (b/m)^(-j/(D/2)),
b = ``model.rope_base``; under "frequency", ω_s,i = m·b^(-i/(D/2)) and ω_n,j = b^(-j/(D/2))/m, so every
matched ratio is exactly m². The frequencies come from ``PrismAttention.rope_bases``/``rope_scales`` and
``rope.stream_frequencies``, the model's own formulas. Their cross-kernel over a window of W positions,

    K_SN(i, j) = (1/W) Σ_{τ=0}^{W-1} cos(ω_s,i τ) cos(ω_n,j τ),

is large when two frequencies resonate (matched pairs i = j and all pairs). K_SN is **first order**:
it tends to 0 for any two different frequencies, so it cannot tell a rational m from an irrational
one. The conjecture is about higher orders: ``closest_approach`` is the smallest |n ω_s,i − k ω_n,j|
over orders 1 <= n, k <= N and pairs that turn within the window (angles folded as integer positions
see them), with its lock window 2π/gap; ``distinguishing_window`` is where two multipliers' angles
first differ by a radian (π against 22/7: hundreds of tokens; against 355/113: millions). Under
"base" scaling pair 0 turns at 1 rad/token in both streams whatever m is and is left out.
The empirical counterpart from a trained model is ``heads.head_statistics``'s logit-lag
correlation: each head's pre-softmax logit as a function of lag, signal head h against noise head h,
over growing windows of lags.

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

import math

import numpy as np
import torch

from prism_lm.model import PrismLM
from prism_lm.model.attention import PrismAttention
from prism_lm.model.config import NAMED_MULTIPLIERS, ModelConfig, resolve_multiplier, with_prism
from prism_lm.model.rope import stream_frequencies

# the named irrationals, their rational neighbours, and multipliers whose square is rational
NAMED_M = {**NAMED_MULTIPLIERS,
           **{name: resolve_multiplier(name) for name in ("22/7", "355/113", "3/2", "2", "3", "1")},
           "sqrt(3/2)": math.sqrt(1.5), "sqrt10": math.sqrt(10.0)}


def stream_frequencies_of(cfg: ModelConfig, m: float, scaling: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(signal, noise) fp64 angular frequencies (D/2,) a PRISM of ``cfg``'s shape would use with
    multiplier m and ``scaling`` (default: the config's), from the model's own formulas."""
    c = with_prism(cfg, freq_multiplier=float(m), noise_stream=True, rope_scaling=scaling or cfg.prism.rope_scaling)
    w_s, w_n = stream_frequencies(PrismAttention.head_width(c), PrismAttention.rope_bases(c),
                                  PrismAttention.rope_scales(c), torch.float64)
    return w_s.numpy(), w_n.numpy()


def alias(x: np.ndarray) -> np.ndarray:
    """Angles as integer positions see them: folded into [0, π] (ω, 2π − ω and ω + 2π look alike)."""
    return np.abs(np.mod(x + np.pi, 2 * np.pi) - np.pi)


def fixed_pairs(scaling: str) -> int:
    """Leading pairs whose frequency no m moves: pair 0 (1 rad/token in both streams) under "base"."""
    return 1 if scaling == "base" else 0


def cross_kernel(w_s: np.ndarray, w_n: np.ndarray, window: int, skip: int = 0) -> dict[str, float]:
    """Mean |K_SN| over matched pairs and over all pairs of two streams' frequencies, leaving out the
    first ``skip`` pairs (``fixed_pairs``: no m can separate them)."""
    w_s, w_n = w_s[skip:], w_n[skip:]
    tau = np.arange(window)
    cs = np.cos(np.outer(w_s, tau))  # (P, W)
    cn = np.cos(np.outer(w_n, tau))
    k = cs @ cn.T / window  # (P, P): K_SN(i, j)
    return {"matched": float(np.abs(np.diag(k)).mean()), "all_pairs": float(np.abs(k).mean())}


def closest_approach(w_s: np.ndarray, w_n: np.ndarray, window: int, max_order: int = 16,
                     matched_only: bool = False, skip: int = 0) -> dict:
    """How close the two streams come to resonance: the smallest |n ω_s,i − k ω_n,j| (folded as integer
    positions see it) over 1 <= n, k <= ``max_order`` and pairs whose frequencies both turn at least
    once in ``window`` tokens (matched pairs i = j only, if asked; the first ``skip`` pairs left out).
    ``lock_window`` = 2π / gap is how
    many tokens the combination takes to complete one turn: on any window shorter than it, the pair
    cannot be told from an exact resonance. gap 0 (below 1e-12 rad) is an exact resonance (lock window
    None: it never turns)."""
    turn = 2 * np.pi / window
    s_idx, n_idx = (np.flatnonzero((alias(w) >= turn) & (np.arange(len(w)) >= skip)) for w in (w_s, w_n))
    if matched_only:
        s_idx = n_idx = np.intersect1d(s_idx, n_idx)
    if not len(s_idx) or not len(n_idx):
        return {"gap": None, "lock_window": None, "pair": None, "orders": None}
    orders = np.arange(1, max_order + 1, dtype=np.float64)
    a = orders[:, None, None] * w_s[s_idx][None, :, None]  # (N, I, 1)
    b = orders[:, None, None] * w_n[n_idx][None, None, :] if not matched_only else None
    if matched_only:  # (n, k, i): only i = j
        gaps = alias(a[:, None, :, 0] - orders[None, :, None] * w_n[n_idx][None, None, :])
        n, k, i = np.unravel_index(np.argmin(gaps), gaps.shape)
        pair = (int(s_idx[i]), int(n_idx[i]))
    else:  # (n, k, i, j)
        gaps = alias(a[:, None, :, :] - b[None, :, :, :])
        n, k, i, j = np.unravel_index(np.argmin(gaps), gaps.shape)
        pair = (int(s_idx[i]), int(n_idx[j]))
    gap = float(gaps.min())
    gap = 0.0 if gap < 1e-12 else gap
    return {"gap": gap, "lock_window": None if gap == 0.0 else 2 * np.pi / gap, "pair": pair,
            "orders": (int(n + 1), int(k + 1))}


def distinguishing_window(cfg: ModelConfig, m_a: float, m_b: float, scaling: str | None = None) -> float:
    """The shortest window (tokens) over which some rotation angle of multiplier m_a differs from m_b's
    by one radian: below it, the two models' position codes are all but the same."""
    diffs = [alias(np.abs(a - b)) for a, b in zip(stream_frequencies_of(cfg, m_a, scaling),
                                                   stream_frequencies_of(cfg, m_b, scaling), strict=True)]
    largest = max(float(d.max()) for d in diffs)
    return math.inf if largest == 0.0 else 1.0 / largest


def ladder_rungs(cfg: ModelConfig, m: float) -> float:
    """The streams' frequency ratio m² under "frequency" scaling, counted in rungs of the model's own
    ladder (consecutive pairs turn b^(1/(D/2)) apart). At a whole number k the noise ladder is the signal
    ladder shifted by k rungs, an exact order-1 resonance of D/2 − k pairs, rational or not; near one
    (π² is 7.95 rungs of the tiny model's ladder, √10's 10 = 10000^(8/32) exactly 8) the ladders lock on
    any window shorter than ``closest_approach``'s lock window."""
    half = PrismAttention.head_width(cfg) // 2
    return 2 * math.log(m) / (math.log(cfg.rope_base) / half)


SCALINGS = ("base", "frequency")
WHAT_A_WINDOW_TELLS = (
    "Irrationality is a limit property: over a window of W tokens, a frequency ratio r and any rational p/q "
    "with |r − p/q| small enough produce the same angles to within a fraction of a radian, so no finite "
    "window (and no model trained on one) can tell π from 355/113. What a window can tell is how close the "
    "two streams come to resonating at low orders (the gap, and the lock window 2π/gap: combinations that "
    "take longer than W to turn look exactly resonant on W), and the window beyond which two multipliers "
    "differ at all. Under 'base' scaling (the official code) pair 0 turns at 1 rad/token in both streams for "
    "every m, an exact resonance no m removes (left out of the numbers here); under 'frequency' scaling every "
    "matched ratio is exactly m².")


def resonance_table(cfg: ModelConfig, windows: tuple[int, ...] = (128, 512, 2048), sweep: int = 121,
                    max_order: int = 16) -> dict:
    """For the named multipliers under both scalings: |K_SN| (first order), the closest approach to
    resonance (all pairs and matched pairs, orders <= ``max_order``) per window, and the window at which
    each m first differs from π; a sweep of m in [1, 4] under the config's scaling."""
    def row(m: float, scaling: str, w: int) -> dict:
        w_s, w_n = stream_frequencies_of(cfg, m, scaling)
        skip = fixed_pairs(scaling)
        return {**cross_kernel(w_s, w_n, w, skip), "closest": closest_approach(w_s, w_n, w, max_order, skip=skip),
                "closest_matched": closest_approach(w_s, w_n, w, max_order, matched_only=True, skip=skip)}

    named = {scaling: {name: {str(w): row(m, scaling, w) for w in windows} for name, m in NAMED_M.items()}
             for scaling in SCALINGS}
    apart = {scaling: {name: distinguishing_window(cfg, math.pi, m, scaling) for name, m in NAMED_M.items()
                       if name != "pi"} for scaling in SCALINGS}
    ms = np.linspace(1.0, 4.0, sweep)
    sweep_rows = {str(w): [row(float(m), cfg.prism.rope_scaling, w) for m in ms] for w in windows}
    return {"head_dim": PrismAttention.head_width(cfg), "rope_base": cfg.rope_base,
            "rope_scaling": cfg.prism.rope_scaling,
            "max_order": max_order, "windows": list(windows), "named": named,
            "named_values": {k: float(v) for k, v in NAMED_M.items()}, "window_to_tell_from_pi": apart,
            "ladder_rungs": {name: ladder_rungs(cfg, m) for name, m in NAMED_M.items()},
            "sweep_m": ms.tolist(), "sweep": {w: [r["matched"] for r in rs] for w, rs in sweep_rows.items()},
            "sweep_gap": {w: [r["closest_matched"]["gap"] for r in rs] for w, rs in sweep_rows.items()},
            "what": WHAT_A_WINDOW_TELLS}


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
        attn = PrismAttention(with_prism(cfg, noise_stream=True), 0)
        attn.reset_parameters()
        values.append(coherence(attn))
    return float(np.mean(values))


def dictionary_norms(model: PrismLM) -> dict[str, list[list[float]]] | None:
    """Per stream: ‖U_k‖_F of each head k, per layer (PRISM kinds only). With Q = K, a head's norm
    scales its self-score, so norms that grow set how peaked ("local") its attention can be."""
    if not all(isinstance(b.attn, PrismAttention) for b in model.blocks):
        return None
    out: dict[str, list[list[float]]] = {}
    for block in model.blocks:
        U = block.attn.dictionary().detach().float()  # (S, H, D, C)
        for s, stream in enumerate(block.attn.stream_names):
            out.setdefault(stream, []).append(U[s].flatten(1).norm(dim=-1).tolist())
    return out


def model_coherence(model: PrismLM) -> list[float | None]:
    return [coherence(b.attn) if isinstance(b.attn, PrismAttention) else None for b in model.blocks]


def coding_rate(Z: torch.Tensor, eps: float = 0.5) -> float:
    """R(Z) = ½ logdet(I + d/(N ε²) Z Zᵀ) for Z (d, N)."""
    return float(_coding_rate(Z, eps))


def _coding_rate(Z: torch.Tensor, eps: float) -> torch.Tensor:
    d, n = Z.shape
    gram = Z @ Z.T if d <= n else Z.T @ Z  # logdet(I + c A Aᵀ) = logdet(I + c Aᵀ A)
    eye = torch.eye(gram.shape[0], dtype=Z.dtype)
    return 0.5 * torch.logdet(eye + (d / (n * eps * eps)) * gram)


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
    return float(_normalised_delta_r(Z, U, lam, eps))


def _normalised_delta_r(Z: torch.Tensor, U: torch.Tensor, lam: float, eps: float) -> torch.Tensor:
    Z = Z / Z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    D = U.shape[2]
    U = U * (D ** 0.5 / U.flatten(2).norm(dim=-1).clamp_min(1e-12))[..., None, None]
    rates = [sum(_coding_rate(U[s, k] @ Z.T, eps) for k in range(U.shape[1])) for s in range(U.shape[0])]
    return rates[0] - lam * rates[1] if len(rates) > 1 else rates[0]


def delta_r_gradient(Z: torch.Tensor, U: torch.Tensor, lam: float, eps: float = 0.5) -> torch.Tensor:
    """∇_Z of the scale-normalised ΔR, for tokens Z (N, C): the direction a gradient-ascent step takes."""
    with torch.enable_grad():
        Z = Z.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(_normalised_delta_r(Z, U, lam, eps), Z)
    return grad


def step_cosines(update: torch.Tensor, grad: torch.Tensor, draws: int = 64, seed: int = 0) -> dict[str, float]:
    """The cosine between an update and the ΔR gradient (both (N, C), flattened), beside the same
    cosine for ``draws`` random Gaussian directions of the same shape: chance, for that many numbers."""
    g = grad.flatten()
    cos = float(torch.nn.functional.cosine_similarity(update.flatten(), g, dim=0))
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(draws, g.numel(), generator=gen, dtype=g.dtype)
    chance = torch.nn.functional.cosine_similarity(noise, g[None], dim=1).abs()
    return {"cosine": cos, "random_abs_mean": float(chance.mean()), "random_abs_p95": float(chance.quantile(0.95))}


@torch.no_grad()
def attention_step_rates(model: PrismLM, idx: torch.Tensor, eps: float = 0.5) -> list[dict] | None:
    """Per PRISM layer: mean scale-normalised ΔR of each window's attention input Z and of
    Z + attention(Z) (U and λ the layer's own), the fraction of windows where it rises, and the
    mean cosine between each window's update and ∇_Z ΔR beside random directions' |cosine| (the
    paper derives the update as a gradient-ascent step on ΔR: a cosine at chance says it is not one)."""
    if not all(isinstance(b.attn, PrismAttention) for b in model.blocks):
        return None
    rows = []
    for layer, (block, (z, update)) in enumerate(zip(model.blocks, _attention_io(model, idx), strict=True)):
        U = block.attn.dictionary().detach().double()
        lam = float(block.attn.current_lambda().detach())
        before = [normalised_delta_r(z[b].double(), U, lam, eps) for b in range(z.shape[0])]
        after = [normalised_delta_r((z[b] + update[b]).double(), U, lam, eps) for b in range(z.shape[0])]
        cosines = [step_cosines(update[b].double(), delta_r_gradient(z[b].double(), U, lam, eps), seed=b)
                   for b in range(z.shape[0])]
        rows.append({"layer": layer, "delta_R_in": float(np.mean(before)), "delta_R_out": float(np.mean(after)),
                     "rises": float(np.mean([a > b for a, b in zip(after, before, strict=True)])),
                     "windows": len(before),
                     **{f"grad_{k}": float(np.mean([c[k] for c in cosines])) for k in cosines[0]}})
    return rows
