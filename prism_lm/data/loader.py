"""Batches of (x, y) windows for training, with a state that can be saved for exact resume.

- ``RandomWindows``: nanoGPT's sampler, B random offsets per batch (with replacement), driven by
  its own seeded generator; the state is that generator's position (batches drawn so far).
- ``SequentialWindows``: non-overlapping windows of T+1 tokens, shuffled once per epoch with
  seed + epoch, dealt round-robin to ranks (rank r takes windows r, r+W, ...), without
  replacement; the state is (epoch, windows consumed). Every rank sees a disjoint part.

Both return int64 tensors (B, T); on CUDA they go through pinned memory with non-blocking copies.
The state is a small dict of ints, saved as JSON by the training loop.
"""

from __future__ import annotations

import numpy as np
import torch

from prism_lm.data.shards import ShardSet
from prism_lm.errors import PrismError


def _to_device(x: np.ndarray, y: np.ndarray, device: torch.device):
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    if device.type == "cuda":
        return xt.pin_memory().to(device, non_blocking=True), yt.pin_memory().to(device, non_blocking=True)
    return xt.to(device), yt.to(device)


class RandomWindows:
    def __init__(self, shards: ShardSet, batch_size: int, block_size: int, seed: int, rank: int = 0,
                 device: torch.device | str = "cpu"):
        if len(shards) <= block_size + 1:
            raise PrismError(f"{shards.split} split has {len(shards)} tokens, "
                             f"need more than block size {block_size} + 1")
        self.shards, self.batch_size, self.block_size = shards, batch_size, block_size
        self.seed, self.rank, self.device = seed, rank, torch.device(device)
        self.batches = 0

    def state_dict(self) -> dict:
        return {"kind": "random", "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "random":
            raise PrismError(f"data-loader state is for a {state.get('kind')!r} sampler, not 'random'")
        self.batches = int(state["batches"])

    def next_batch(self):
        # one generator per batch, keyed by (seed, rank, batch number): resuming is just a counter
        rng = np.random.default_rng([self.seed, self.rank, self.batches])
        starts = rng.integers(0, len(self.shards) - self.block_size - 1, size=self.batch_size)
        rows = np.stack([self.shards.window(int(s), self.block_size + 1) for s in starts])
        self.batches += 1
        return _to_device(rows[:, :-1], rows[:, 1:], self.device)


class SequentialWindows:
    def __init__(self, shards: ShardSet, batch_size: int, block_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, device: torch.device | str = "cpu", shuffle: bool = True):
        self.shards, self.batch_size, self.block_size = shards, batch_size, block_size
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.device = torch.device(device)
        self.n_windows = (len(shards) - 1) // block_size
        self.per_rank = self.n_windows // world_size
        if self.per_rank < batch_size:
            raise PrismError(f"{shards.split} split has {self.n_windows} windows of {block_size} tokens, fewer than "
                             f"one batch of {batch_size} per rank for {world_size} rank(s)")
        self.epoch, self.consumed = 0, 0
        self._order_epoch, self._order = -1, None

    def state_dict(self) -> dict:
        return {"kind": "sequential", "epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "sequential":
            raise PrismError(f"data-loader state is for a {state.get('kind')!r} sampler, not 'sequential'")
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])

    def _rank_order(self) -> np.ndarray:
        if self._order_epoch != self.epoch:
            order = np.arange(self.n_windows)
            if self.shuffle:
                order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_windows)
            self._order = order[: self.per_rank * self.world_size][self.rank::self.world_size]
            self._order_epoch = self.epoch
        return self._order

    def next_batch(self):
        if self.consumed + self.batch_size > self.per_rank:  # drop the ragged tail, start a new epoch
            self.epoch, self.consumed = self.epoch + 1, 0
        ids = self._rank_order()[self.consumed:self.consumed + self.batch_size]
        self.consumed += self.batch_size
        rows = np.stack([self.shards.window(int(w) * self.block_size, self.block_size + 1) for w in ids])
        return _to_device(rows[:, :-1], rows[:, 1:], self.device)


def make_loader(kind: str, shards: ShardSet, batch_size: int, block_size: int, seed: int, rank: int = 0,
                world_size: int = 1, device: torch.device | str = "cpu"):
    if kind == "random":
        return RandomWindows(shards, batch_size, block_size, seed, rank, device)
    return SequentialWindows(shards, batch_size, block_size, seed, rank, world_size, device)
