"""C2's stability measures on training curves with a known answer."""

import numpy as np
import pytest

from prism_lm.experiments.stability import spike_steps, stability_columns


def _curve(n=400, seed=0, noise=0.03):
    rng = np.random.default_rng(seed)
    return 2.0 + np.exp(-np.arange(n) / 80) + rng.normal(0, noise, n)


def test_planted_spikes_are_found_and_batch_noise_is_not_one():
    losses = _curve()
    assert spike_steps(losses) == []  # a noisy but smooth descent has none
    planted = losses.copy()
    for i in (150, 260, 330):
        planted[i] += 0.5
    assert spike_steps(planted) == [150, 260, 330]
    planted[300] += 0.06  # within the batch noise and under 0.1 nat: not a spike
    assert 300 not in spike_steps(planted)
    loud = _curve(noise=0.3)  # very noisy batches: a +0.5 jump is within 5 robust sds, not a spike
    assert len(spike_steps(loud)) <= 1


def test_the_late_gradient_spread_is_scale_free_and_spikes_count_after_warm_up():
    rng = np.random.default_rng(1)
    norms = list(np.exp(rng.normal(0, 0.2, 200)))
    steps, losses = list(range(1, 201)), list(_curve(200))
    losses[10] += 1.0  # a spike during warm-up (step 11 <= 30): not counted
    losses[120] += 1.0
    a = stability_columns(steps, losses, norms, warmup_iters=30)
    b = stability_columns(steps, losses, [4.0 * n for n in norms], warmup_iters=30)
    assert a["loss_spikes"] == 1 and a["loss_spike_rate"] == pytest.approx(1000 / 170)
    assert a["grad_norm_late_log_sd"] == pytest.approx(b["grad_norm_late_log_sd"])  # a constant factor drops out
    assert b["grad_norm_late_mean"] == pytest.approx(4.0 * a["grad_norm_late_mean"])
    assert a["grad_norm_late_log_sd"] == pytest.approx(np.log(norms[100:]).std(ddof=1))
    assert stability_columns([], [], [], 30) == {"loss_spikes": None, "loss_spike_rate": None,
                                                 "grad_norm_late_mean": None, "grad_norm_late_log_sd": None}
