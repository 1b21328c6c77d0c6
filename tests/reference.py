"""A deliberately naive PRISM, written from the paper's equations, independent of prism_lm.model.

It works on the *official* checkpoint layout (nanoGPT key names, U rows in interleaved RoPE
order) so it serves two tests: our attention equals eq. 7, and imported official checkpoints
reproduce the official forward. Loops over heads, explicit masks, no SDPA, no shared helpers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rope_interleaved(x: torch.Tensor, base: float) -> torch.Tensor:
    """x (T, D): rotate pairs (x[2i], x[2i+1]) at position t by angle t * base^(-i/(D/2))."""
    T, D = x.shape
    out = torch.empty_like(x)
    for i in range(D // 2):
        freq = 1.0 / (base ** (torch.tensor(float(i)) / (D // 2)))
        for t in range(T):
            angle = torch.tensor(float(t)) * freq
            c, s = torch.cos(angle), torch.sin(angle)
            a, b = x[t, 2 * i], x[t, 2 * i + 1]
            out[t, 2 * i] = a * c - b * s
            out[t, 2 * i + 1] = a * s + b * c
    return out


def prism_attention_eq7(z: torch.Tensor, U: torch.Tensor, n_head: int, lam: float, m: float,
                        expansion_ratio: int) -> torch.Tensor:
    """One sequence z (T, C); U (2*H*D, C), signal heads first. Returns (T, C).

    out = 1/sqrt(2 H R) * ( sum_k U_s,k^T y_s,k  -  λ sum_k U_n,k^T y_n,k ),
    y_k = V_k softmax_causal(Q_k K_k^T / sqrt(D)), Q_k = K_k = RoPE(U_k z), V_k = U_k z.
    """
    T, C = z.shape
    D = U.shape[0] // (2 * n_head)
    mask = torch.zeros(T, T)
    for i in range(T):
        for j in range(T):
            if j > i:
                mask[i, j] = float("-inf")
    out = torch.zeros(T, C)
    for stream, (base, coef) in enumerate([(10000.0 * m, 1.0), (10000.0 / m, -lam)]):
        for h in range(n_head):
            U_k = U[(stream * n_head + h) * D:(stream * n_head + h + 1) * D]  # (D, C)
            v = z @ U_k.T  # (T, D)
            q = rope_interleaved(v, base)
            scores = (q @ q.T) / math.sqrt(D) + mask
            y = torch.softmax(scores, dim=-1) @ v  # (T, D)
            out = out + coef * (y @ U_k)
    return out / math.sqrt(2 * n_head * expansion_ratio)


def official_logits(state: dict[str, torch.Tensor], args: dict, idx: torch.Tensor) -> torch.Tensor:
    """The official forward (eval mode) for one sequence idx (T,), from an official state dict."""
    state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}
    C, H, L = args["n_embd"], args["n_head"], args["n_layer"]

    def ln(x, prefix):
        return F.layer_norm(x, (C,), state[prefix + ".weight"], state.get(prefix + ".bias"), 1e-5)

    def linear(x, prefix):
        return F.linear(x, state[prefix + ".weight"], state.get(prefix + ".bias"))

    T = idx.shape[0]
    x = state["transformer.wte.weight"][idx] + state["transformer.wpe.weight"][:T]
    for layer in range(L):
        p = f"transformer.h.{layer}"
        x = x + prism_attention_eq7(ln(x, p + ".ln_1"), state[p + ".attn.u_proj.weight"], H,
                                    float(state[p + ".attn.lambda_q"]), args["prism_freq_multiplier"],
                                    args["prism_expansion_ratio"])
        h = linear(F.gelu(linear(ln(x, p + ".ln_2"), p + ".mlp.c_fc")), p + ".mlp.c_proj")
        x = x + h
    x = ln(x, "transformer.ln_f")
    return x @ state["transformer.wte.weight"].T


def make_official_checkpoint(args: dict, seed: int = 0, prefix: str = "") -> dict:
    """A random checkpoint in the official format (what its train.py saves), for import tests."""
    g = torch.Generator().manual_seed(seed)
    C, H, L, V, T = args["n_embd"], args["n_head"], args["n_layer"], args["vocab_size"], args["block_size"]
    D = C // H * args["prism_expansion_ratio"]

    def rnd(*shape, std=0.1):
        return torch.randn(*shape, generator=g) * std

    sd = {"transformer.wte.weight": rnd(V, C), "transformer.wpe.weight": rnd(T, C)}
    for layer in range(L):
        p = f"transformer.h.{layer}"
        sd[p + ".ln_1.weight"] = 1 + rnd(C)
        sd[p + ".attn.u_proj.weight"] = rnd(2 * H * D, C, std=0.2)
        sd[p + ".attn.lambda_q"] = torch.tensor(0.05 + 0.01 * layer)
        sd[p + ".attn.bias"] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
        sd[p + ".ln_2.weight"] = 1 + rnd(C)
        sd[p + ".mlp.c_fc.weight"] = rnd(4 * C, C)
        sd[p + ".mlp.c_proj.weight"] = rnd(C, 4 * C)
        if args["bias"]:
            for name, n in (("ln_1", C), ("ln_2", C), ("mlp.c_fc", 4 * C), ("mlp.c_proj", C)):
                sd[f"{p}.{name}.bias"] = rnd(n)
    sd["transformer.ln_f.weight"] = 1 + rnd(C)
    if args["bias"]:
        sd["transformer.ln_f.bias"] = rnd(C)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    sd = {prefix + k: v for k, v in sd.items()}
    return {"model": sd, "model_args": dict(args), "optimizer": {"state": {}, "param_groups": []},
            "iter_num": 1234, "best_val_loss": torch.tensor(1.55), "config": {"learning_rate": 6e-4}}
