"""Batches of (x, y) windows for training, with a state that can be saved for exact resume.

- ``RandomWindows``: nanoGPT's sampler, B random offsets per batch (with replacement); with
  ``bos``, the offsets are drawn among the split's ``<|endoftext|>`` tokens, so every window
  starts with the same token, a BOS (``data.sampler = "bos"``: trained LMs form attention sinks on
  a shared first token, and the sink claims need one to exist).
- ``SequentialWindows``: non-overlapping windows of T+1 tokens, shuffled once per epoch with
  seed + epoch, without replacement.

Both deal *global micro-batches*: micro-batch g is a pure function of (seed, g), and rank r of W
takes g = r, r+W, r+2W, ... So W ranks with gradient accumulation A/W see exactly the batches of
one process with accumulation A, and the state is just a counter (plus the epoch).

Both return int64 tensors (B, T); on CUDA they go through pinned memory with non-blocking copies.
The state is a small dict of ints, saved as JSON by the training loop. With ``answers``
(``data.loss_on = "answers"``), targets other than annotated answers are ``IGNORE_INDEX``: the loss
scores the answers alone, as Zoology trains MQAR (the inputs are unchanged).
"""

from __future__ import annotations

import numpy as np
import torch

from prism_lm.data.shards import ShardSet
from prism_lm.errors import PrismError
from prism_lm.model.loss import IGNORE_INDEX


def _batch(shards: ShardSet, starts, block_size: int, device: torch.device, answers: np.ndarray | None):
    """Inputs and targets of the windows at ``starts``; with ``answers`` (``data.loss_on = "answers"``),
    every target that is not an annotated answer is IGNORE_INDEX, so the loss scores answers only."""
    rows = shards.windows(starts, block_size + 1)
    x, y = rows[:, :-1], rows[:, 1:]
    if answers is not None:
        y = np.where(answers[np.asarray(starts)[:, None] + np.arange(1, block_size + 1)], y, IGNORE_INDEX)
    return _to_device(x, y, device)


def answers_in_every_window(shards: ShardSet, starts: np.ndarray, block_size: int) -> np.ndarray:
    """The split's answer mask (``data.loss_on = "answers"``), once every window a sampler can draw
    (offsets ``starts``) is known to hold an answer: a batch of windows without one has no loss to
    take the mean of, so such data is refused before training, not met as a NaN mid-run."""
    mask = shards.answer_mask()
    seen = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])  # seen[i]: answers among the first i tokens
    empty = int(np.count_nonzero(seen[starts + block_size + 1] == seen[starts + 1]))
    if empty:
        raise PrismError(f"data.loss_on = 'answers': {empty:,} of the {len(starts):,} windows of {block_size} tokens "
                         f"this sampler draws from the {shards.split} split hold no answer, so a batch of them has "
                         "no loss; use windows that each hold one (data.sampler = 'bos' on a synthetic task) or a "
                         "longer model.block_size")
    return mask


def _to_device(x: np.ndarray, y: np.ndarray, device: torch.device):
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    if device.type == "cuda":
        return xt.pin_memory().to(device, non_blocking=True), yt.pin_memory().to(device, non_blocking=True)
    return xt.to(device), yt.to(device)


class RandomWindows:
    def __init__(self, shards: ShardSet, batch_size: int, block_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, device: torch.device | str = "cpu", bos: bool = False, answers: bool = False):
        if len(shards) <= block_size + 1:
            raise PrismError(f"{shards.split} split has {len(shards)} tokens, "
                             f"need more than block size {block_size} + 1")
        self.shards, self.batch_size, self.block_size = shards, batch_size, block_size
        self.seed, self.rank, self.world_size, self.device = seed, rank, world_size, torch.device(device)
        self.batches = 0
        self.starts = bos_starts(shards, block_size) if bos else None
        self.answers = None
        if answers:
            every = self.starts if bos else np.arange(len(shards) - block_size - 1)
            self.answers = answers_in_every_window(shards, every, block_size)

    def state_dict(self) -> dict:
        return {"kind": "random", "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "random":
            raise PrismError(f"data-loader state is for a {state.get('kind')!r} sampler, not 'random'")
        self.batches = int(state["batches"])

    def next_batch(self):
        rng = np.random.default_rng([self.seed, self.batches * self.world_size + self.rank])
        if self.starts is None:
            starts = rng.integers(0, len(self.shards) - self.block_size - 1, size=self.batch_size)
        else:
            starts = self.starts[rng.integers(0, len(self.starts), size=self.batch_size)]
        self.batches += 1
        return _batch(self.shards, starts, self.block_size, self.device, self.answers)


def bos_starts(shards: ShardSet, block_size: int, chunk: int = 1 << 24) -> np.ndarray:
    """The offsets of the split's ``<|endoftext|>`` tokens that a window of block_size + 1 fits after
    (read in chunks: the split is never held whole)."""
    eot, n, found = shards.codec().eot, len(shards), []
    for first in range(0, n, chunk):
        found.append(np.flatnonzero(shards.window(first, min(chunk, n - first)) == eot) + first)
    starts = np.concatenate(found) if found else np.zeros(0, np.int64)
    starts = starts[starts + block_size + 1 <= n]
    if not len(starts):
        raise PrismError(f"data.sampler = 'bos': the {shards.split} split has no <|endoftext|> with "
                         f"{block_size + 1} tokens after it (documents are separated by it)")
    return starts


def window_starts(shards: ShardSet, T: int, max_windows: int | None = None, bos: bool = False) -> list[int]:
    """The token offsets of the windows (T + 1 tokens each) an evaluation reads: the split's
    non-overlapping windows in order, or (``bos``, for models trained with ``data.sampler = "bos"``)
    windows that open on the split's ``<|endoftext|>`` tokens, as those models' training windows did.
    With ``max_windows``, that many spread evenly over the whole split (the first and the last among
    them), never its first ones alone: a split prepared from several sources holds them in order, and
    its first windows would all be the first source's. Evaluation, head statistics and interventions
    all read these."""
    starts = bos_starts(shards, T).tolist() if bos else [w * T for w in range((len(shards) - 1) // T)]
    if max_windows is None or max_windows >= len(starts):
        return starts
    if max_windows <= 1:
        return starts[:max_windows]
    picks = np.linspace(0, len(starts) - 1, max_windows).round().astype(int)  # distinct: the gaps are >= 1
    return [starts[i] for i in picks]


class SequentialWindows:
    def __init__(self, shards: ShardSet, batch_size: int, block_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, device: torch.device | str = "cpu", shuffle: bool = True, answers: bool = False):
        self.shards, self.batch_size, self.block_size = shards, batch_size, block_size
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.device = torch.device(device)
        self.n_windows = (len(shards) - 1) // block_size
        every = np.arange(self.n_windows) * block_size
        self.answers = answers_in_every_window(shards, every, block_size) if answers else None
        self.batches_per_rank = self.n_windows // batch_size // world_size  # per epoch; the ragged tail is dropped
        if self.batches_per_rank < 1:
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

    def epoch_order(self) -> np.ndarray:
        """Window ids of the current epoch in global order (micro-batch g = ids[g*B:(g+1)*B])."""
        if self._order_epoch != self.epoch:
            self._order = np.arange(self.n_windows)
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_windows)
            self._order_epoch = self.epoch
        return self._order

    def rank_windows(self) -> np.ndarray:
        """This rank's window ids for the current epoch, in the order it reads them."""
        B, W = self.batch_size, self.world_size
        order = self.epoch_order()
        return np.concatenate([order[(g * W + self.rank) * B:(g * W + self.rank + 1) * B]
                               for g in range(self.batches_per_rank)])

    def next_batch(self):
        if self.consumed == self.batches_per_rank:
            self.epoch, self.consumed = self.epoch + 1, 0
        g = self.consumed * self.world_size + self.rank
        ids = self.epoch_order()[g * self.batch_size:(g + 1) * self.batch_size]
        self.consumed += 1
        return _batch(self.shards, ids * self.block_size, self.block_size, self.device, self.answers)


def make_loader(kind: str, shards: ShardSet, batch_size: int, block_size: int, seed: int, rank: int = 0,
                world_size: int = 1, device: torch.device | str = "cpu", answers: bool = False):
    if kind in ("random", "bos"):
        return RandomWindows(shards, batch_size, block_size, seed, rank, world_size, device, bos=kind == "bos",
                             answers=answers)
    return SequentialWindows(shards, batch_size, block_size, seed, rank, world_size, device, answers=answers)
