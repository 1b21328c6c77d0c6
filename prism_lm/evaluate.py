"""Validation loss and perplexity over a whole split, in non-overlapping windows.

Unlike the training loop's estimate (random windows), every token of the split is scored once
per context length: the split is cut into windows of ``context + 1`` tokens with stride
``context``, and each window scores its ``context`` targets. Models trained with different
block sizes are then compared on the same tokens (the ragged tail is dropped and reported).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from prism_lm.bounds import MAX_POSITIONS, bounded_int
from prism_lm.data.loader import window_starts
from prism_lm.data.shards import ShardSet
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM
from prism_lm.model.loss import lm_cross_entropy


@torch.no_grad()
def evaluate_split(model: PrismLM, shards: ShardSet, context: int, batch_size: int = 8,
                   device: torch.device | str = "cpu", max_windows: int | None = None, progress: bool = False,
                   bos: bool = False, answers: bool = False) -> dict:
    """The mean loss over the split's non-overlapping windows of ``context`` tokens, or (``bos``, for a
    model trained with ``data.sampler = "bos"``) over windows that open on each ``<|endoftext|>``, as
    its training windows did. ``answers``: over the annotated answer tokens of those windows only, as
    a model trained with ``data.loss_on = "answers"`` was scored (``tokens`` counts them), with the
    mean over every target of the same windows beside it (``every_token_loss``, from the same pass)."""
    if context > model.config.block_size:
        if model.wpe is not None:
            raise PrismError(f"context {context} exceeds the model's block size {model.config.block_size} (longer "
                             "contexts need a model without a learned position embedding)")
        model.extend_positions(context)
    if shards.vocab_size > model.config.vocab_size:
        raise PrismError(f"data vocabulary ({shards.vocab_size}) is larger than the model's "
                         f"({model.config.vocab_size})")
    starts = window_starts(shards, context, max_windows, bos)
    n_windows = len(starts)
    if n_windows == 0:
        raise PrismError(f"{shards.split} split has {len(shards)} tokens, too few for one window of {context}")
    model.eval()
    scored = shards.answer_mask() if answers else None
    total, count, read, every = 0.0, 0, 0, 0.0  # read: the targets the windows hold (count: those scored)
    for first in tqdm(range(0, n_windows, batch_size), desc=f"context {context}", unit="batch", leave=False,
                      disable=not progress):
        batch = starts[first:first + batch_size]
        rows = torch.from_numpy(shards.windows(batch, context + 1)).to(device)
        read += rows[:, 1:].numel()
        if scored is None:
            total += float(model(rows[:, :-1], rows[:, 1:], reduction="sum").loss)
            count += rows[:, 1:].numel()
        else:  # the targets at offsets 1..context of each window that are answers
            keep = torch.from_numpy(scored[np.asarray(batch)[:, None] + 1 + np.arange(context)]).to(device)
            nll = lm_cross_entropy(model(rows[:, :-1]).logits, rows[:, 1:], reduction="none")
            total += float(nll[keep].sum())
            count += int(keep.sum())
            every += float(nll.sum())
    if count == 0:
        raise PrismError(f"the {shards.split} split's windows of {context} tokens hold no annotated answer to score")
    loss = total / count
    result = {"context": context, "split": shards.split, "tokens": count, "windows": n_windows,
              "dropped_tokens": max(0, len(shards) - 1 - read), "loss": loss, "perplexity": math.exp(loss)}
    return result | ({"every_token_loss": every / read} if answers else {})


def evaluate_checkpoint(checkpoint: str | Path, data_dir: str | Path | None, contexts: list[int] | None = None,
                        split: str = "val", batch_size: int = 8, device: str = "auto",
                        overrides: list[str] = ()) -> tuple[str, list[dict]]:
    """The data folder scored and ``evaluate_split`` of a checkpoint (or a run's best) at each context
    length (None: its block size), on ``data_dir`` (None: the data folder its run recorded), with
    ``load_model``'s evaluation-time ``overrides``; a run trained on BOS windows is scored on them."""
    from prism_lm.checkpoint.model import open_on_data

    bounded_int(batch_size, "--batch-size", 1)
    for context in contexts or []:
        bounded_int(context, "--context", 1, MAX_POSITIONS, high_open=False)
    from prism_lm.run_dir import trained_on_bos

    model, directory, data_dir = open_on_data(checkpoint, data_dir, device, overrides)
    dev = next(model.parameters()).device
    shards = ShardSet(data_dir, split)
    bos = trained_on_bos(directory)
    terminal, results = sys.stderr.isatty(), []
    for context in contexts or [model.config.block_size]:
        if not terminal:  # a progress bar on a terminal; in a log file, a line as each context starts
            print(f"[eval] {split} split of {data_dir}, context {context}: {len(shards):,} tokens ...",
                  file=sys.stderr, flush=True)
        results.append(evaluate_split(model, shards, context, batch_size=batch_size, device=dev, progress=terminal,
                                      bos=bos))
    return data_dir, results
