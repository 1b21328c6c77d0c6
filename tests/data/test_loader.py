import numpy as np
import pytest
import torch

from prism_lm.data.loader import RandomWindows, SequentialWindows, make_loader
from prism_lm.data.prepare import prepare
from prism_lm.data.shards import ShardSet
from prism_lm.errors import PrismError


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("d") / "d"
    prepare(["embedded:40"], out, val_fraction=0.0, progress=False)
    return ShardSet(out, "train")


def test_random_windows_are_shifted_pairs_and_resumable(shards):
    loader = RandomWindows(shards, 4, 16, seed=3)
    x, y = loader.next_batch()
    assert x.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    loader.next_batch()
    state = loader.state_dict()
    expected = loader.next_batch()
    again = RandomWindows(shards, 4, 16, seed=3)
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(again.next_batch(), expected, strict=True))


def test_sequential_covers_each_window_once_per_epoch_across_ranks(shards):
    T, B, W = 16, 2, 2
    n_windows = (len(shards) - 1) // T
    stream = shards.window(0, len(shards))
    windows = []
    for rank in range(W):
        loader = SequentialWindows(shards, B, T, seed=1, rank=rank, world_size=W)
        order = loader.rank_windows().tolist()
        for step in range(loader.batches_per_rank):
            x, y = loader.next_batch()
            ids = order[step * B:(step + 1) * B]
            for row, w in enumerate(ids):  # each row is exactly window w of the stream
                assert np.array_equal(x[row].numpy(), stream[w * T:(w + 1) * T])
                assert np.array_equal(y[row].numpy(), stream[w * T + 1:(w + 1) * T + 1])
            windows.extend(ids)
    assert len(windows) == len(set(windows)), "no window twice in an epoch"
    assert len(windows) > n_windows - W * B, "at most the ragged tail is dropped"


@pytest.mark.parametrize("kind", ["random", "sequential"])
def test_ranks_together_read_what_one_process_reads(shards, kind):
    single = make_loader(kind, shards, 2, 16, seed=4)
    ranks = [make_loader(kind, shards, 2, 16, seed=4, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):  # one process, two micro-batches == two ranks, one micro-batch each
        for r in range(2):
            assert torch.equal(single.next_batch()[0], ranks[r].next_batch()[0])


def test_sequential_state_resumes_exactly_across_epochs(shards):
    a = SequentialWindows(shards, 3, 16, seed=5)
    batches = [a.next_batch()[0] for _ in range(a.batches_per_rank + 2)]  # crosses an epoch boundary
    assert a.state_dict()["epoch"] == 1
    b = SequentialWindows(shards, 3, 16, seed=5)
    for _ in range(4):
        b.next_batch()
    c = SequentialWindows(shards, 3, 16, seed=5)
    c.load_state_dict(b.state_dict())
    rest = [c.next_batch()[0] for _ in range(len(batches) - 4)]
    assert all(torch.equal(p, q) for p, q in zip(rest, batches[4:], strict=True))


def test_rank_windows_are_disjoint(shards):
    r0 = SequentialWindows(shards, 1, 16, seed=2, rank=0, world_size=2)
    r1 = SequentialWindows(shards, 1, 16, seed=2, rank=1, world_size=2)
    assert set(r0.rank_windows().tolist()).isdisjoint(r1.rank_windows().tolist())
    assert len(r0.rank_windows()) == len(r1.rank_windows())


def test_too_little_data_and_wrong_state(shards):
    with pytest.raises(PrismError, match="fewer than one batch"):
        SequentialWindows(shards, 10_000, 16, seed=0)
    with pytest.raises(PrismError, match="need more than block size"):
        RandomWindows(shards, 1, len(shards), seed=0)
    loader = make_loader("random", shards, 2, 8, seed=0)
    with pytest.raises(PrismError, match="'sequential'"):
        loader.load_state_dict({"kind": "sequential", "epoch": 0, "consumed": 0})
    assert isinstance(make_loader("sequential", shards, 2, 8, seed=0), SequentialWindows)
    assert np.all(shards.window(0, 5) >= 0)
