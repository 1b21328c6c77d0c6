"""The fast path (SDPA, chunked loss) trains exactly like the eager path (written-out softmax, plain head)."""

import pytest
import torch

from prism_lm.model import PrismLM
from tests.helpers import ALL_KINDS, tiny_model_config


def training_losses(kind: str, eager: bool, loss_chunk: int, steps: int = 50, device: str = "cpu",
                    autocast_dtype: torch.dtype | None = None, **model) -> list[float]:
    torch.manual_seed(0)
    net = PrismLM(tiny_model_config(kind, dropout=0.0, block_size=64, **model)).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.1)
    data = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, 24, (4, 65), generator=data)  # a small alphabet, so the loss falls fast
        x, y = idx[:, :-1].to(device), idx[:, 1:].to(device)
        with torch.autocast(device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            _, loss = net(x, y, loss_chunk=loss_chunk, eager=eager)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_fast_path_matches_eager_path_over_50_steps_fp32(kind):
    eager = training_losses(kind, eager=True, loss_chunk=0)
    fast = training_losses(kind, eager=False, loss_chunk=48)
    assert eager[-1] < eager[0] - 0.5, "the run must learn for the comparison to mean anything"
    torch.testing.assert_close(torch.tensor(fast), torch.tensor(eager), rtol=2e-4, atol=2e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_fast_path_matches_eager_path_over_50_steps_bf16_cuda(kind):
    eager = training_losses(kind, eager=True, loss_chunk=0, device="cuda", autocast_dtype=torch.bfloat16)
    fast = training_losses(kind, eager=False, loss_chunk=48, device="cuda", autocast_dtype=torch.bfloat16)
    diffs = torch.tensor(fast) - torch.tensor(eager)
    # bf16 noise: per-step differences of a few 1e-2 at most, no drift
    assert diffs.abs().max() < 0.05 and abs(diffs[-10:].mean()) < 0.02
