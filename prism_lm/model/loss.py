"""The LM-head loss: the one place where logits meet targets.

``lm_cross_entropy`` is the plain loss every consumer uses (training through the model's forward,
whole-split evaluation, the analysis' per-token losses, the Hugging Face wrapper): log-softmax in
fp32, targets equal to ``IGNORE_INDEX`` ignored. ``chunked_linear_cross_entropy`` computes the same
mean with the tied head, chunked so the (B·T, V) logits never exist in full.

At the paper's shape one micro-batch has 16,384 positions and V = 50,304: the plain path holds
the logits in bf16 (1.6 GiB), their fp32 copy for the loss (3.3 GiB) and the gradient of both.
Here the positions are processed ``chunk_size`` at a time. Forward computes each chunk's logits,
its loss and, when gradients are needed, its gradients at once (softmax minus one-hot, then the
two small matmuls), so backward only rescales the saved gradients: no logits are kept and none
are recomputed. The price is that gradients are computed even if backward is never called; the
function skips that work when no input needs a gradient (evaluation under ``no_grad``).

Numerics follow the plain path: the matmuls run in the autocast dtype, log-softmax in fp32,
targets equal to ``IGNORE_INDEX`` count neither in the loss nor in the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -1


def lm_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean",
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """CE of logits (..., V) against targets (...): "mean" or "sum" over the kept targets, or "none"
    (the shape of ``targets``, 0 where ignored)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=ignore_index, reduction=reduction)
    return loss.view(targets.shape) if reduction == "none" else loss


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int,
                grad_enabled: bool):
        # hidden (N, C), weight (V, C), targets (N,)
        need_h, need_w = (grad_enabled and ctx.needs_input_grad[i] for i in (0, 1))
        valid = targets != IGNORE_INDEX
        count = valid.sum().clamp_min(1).float()
        loss = torch.zeros((), device=hidden.device, dtype=torch.float32)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.empty_like(weight, dtype=torch.float32) if need_w else None
        for start in range(0, hidden.size(0), chunk_size):
            h, t = hidden[start:start + chunk_size], targets[start:start + chunk_size]
            m = valid[start:start + chunk_size]
            # one fused log-softmax pass over the (n, V) logits, then its exp in place: the softmax
            # (a separate logsumexp and subtraction cost two more passes and a second (n, V) buffer)
            logp = torch.log_softmax((h @ weight.t()).float(), dim=-1)  # (n, V)
            picked = logp.gather(1, t.clamp_min(0)[:, None]).squeeze(1)
            loss -= torch.where(m, picked, 0.0).sum()
            if need_h or need_w:
                g = logp.exp_()  # softmax, in the log-probabilities' storage
                g.scatter_add_(1, t.clamp_min(0)[:, None], torch.full_like(picked, -1.0)[:, None])
                g *= (m.float() / count)[:, None]
                g = g.to(h.dtype)
                if need_h:
                    torch.mm(g, weight.to(g.dtype), out=grad_h[start:start + chunk_size])
                if need_w:
                    first = start == 0  # written, not accumulated: the (V, C) buffer is never zero-filled
                    if h.dtype == torch.float32:  # in place (beta 0 ignores the empty buffer): no temporary
                        grad_w.addmm_(g.t(), h, beta=0.0 if first else 1.0)
                    elif first:
                        grad_w.copy_(g.t() @ h)
                    else:
                        grad_w += (g.t() @ h).float()
        ctx.save_for_backward(grad_h, None if grad_w is None else grad_w.to(weight.dtype))
        return loss / count

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        # always a new tensor, even for a gradient of 1: autograd may keep the returned one as .grad and
        # add to it in place, which a kept graph's next backward would then read (tests/model/test_loss.py)
        scale = [None if g is None else g * grad_loss.to(g.dtype) for g in (grad_h, grad_w)]
        return scale[0], scale[1], None, None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                 chunk_size: int = 2048) -> torch.Tensor:
    """Mean CE of ``hidden @ weight.T`` against ``targets``: hidden (..., C), weight (V, C), targets (...)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    # needs_input_grad is True even under no_grad, so the grad mode travels as an argument
    return _ChunkedLinearCrossEntropy.apply(hidden.reshape(-1, hidden.size(-1)), weight, targets.reshape(-1),
                                            chunk_size, torch.is_grad_enabled())
