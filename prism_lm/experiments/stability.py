"""Training stability from a run's logged steps (C2): loss spikes, and how much the gradient norm
varies late in training.

Design choices:
- A loss spike is a logged step (after warm-up) whose training loss lies above the median of the 20
  logged steps before it by more than 0.1 nat and more than 5 robust standard deviations of those
  steps (1.4826 × their median absolute deviation): a jump the batch-to-batch noise does not explain,
  whatever the model's loss level. The rate is per 1,000 logged steps.
- The late gradient norm is the second half of the logged steps. Its spread is the standard deviation
  of log(norm): scale-free, so two models whose gradients differ in size by a constant factor (PRISM's
  1/sqrt(2HR) output scale against GPT's 1) compare on how much their norms move, not on the factor;
  the mean is reported beside it.
"""

from __future__ import annotations

import numpy as np

SPIKE_WINDOW = 20
SPIKE_MIN_NATS = 0.1
SPIKE_ROBUST_SDS = 5.0
STABILITY_COLUMNS = ("loss_spikes", "loss_spike_rate", "grad_norm_late_mean", "grad_norm_late_log_sd")


def spike_steps(losses, after: int = 0) -> list[int]:
    """Indices (into ``losses``, logged steps in order) of the loss spikes at or after index ``after``."""
    x = np.asarray(losses, float)
    out = []
    for i in range(max(after, SPIKE_WINDOW), len(x)):
        before = x[i - SPIKE_WINDOW:i]
        before = before[np.isfinite(before)]
        if len(before) < SPIKE_WINDOW // 2 or not np.isfinite(x[i]):
            continue
        median = float(np.median(before))
        robust_sd = 1.4826 * float(np.median(np.abs(before - median)))
        if x[i] - median > max(SPIKE_MIN_NATS, SPIKE_ROBUST_SDS * robust_sd):
            out.append(i)
    return out


def stability_columns(steps: list[int], losses: list[float], norms: list[float], warmup_iters: int) -> dict:
    """``loss_spikes``, ``loss_spike_rate`` (per 1,000 logged steps after warm-up), ``grad_norm_late_mean``
    and ``grad_norm_late_log_sd`` (the second half of the logged steps) of one run's logged steps."""
    after = next((i for i, s in enumerate(steps) if s > warmup_iters), len(steps))
    spikes = spike_steps(losses, after)
    counted = max(len(steps) - max(after, SPIKE_WINDOW), 0)
    late = np.asarray(norms[len(norms) // 2:], float)
    late = late[np.isfinite(late) & (late > 0)]
    return {"loss_spikes": len(spikes) if counted else None,
            "loss_spike_rate": 1000.0 * len(spikes) / counted if counted else None,
            "grad_norm_late_mean": float(late.mean()) if len(late) else None,
            "grad_norm_late_log_sd": float(np.log(late).std(ddof=1)) if len(late) > 1 else None}
