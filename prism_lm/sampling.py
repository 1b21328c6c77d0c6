"""Text in, text out: a checkpoint, its own codec, and ``generate``.

The checkpoint's codec (``checkpoint.load_codec``) turns the prompt into ids and the ids back into
text, whatever its vocabulary (GPT-2 BPE, or a compact map of it). A checkpoint that records no
codec and whose vocabulary is not GPT-2's is a model of bare ids: its prompt is a list of ids and
its output is ids.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prism_lm.bounds import MAX_NEW_TOKENS, bounded_int, finite_float
from prism_lm.checkpoint import load_model
from prism_lm.devices import resolve_device
from prism_lm.errors import PrismError
from prism_lm.model import generate


def sample(checkpoint: str | Path, prompt: str = "", max_new_tokens: int = 200, temperature: float = 0.8,
           top_k: int | None = 200, top_p: float | None = None, num_samples: int = 1, seed: int = 1337,
           device: str = "cpu", overrides: list[str] = ()) -> list[str]:
    """``num_samples`` continuations of ``prompt``, each prompt + new text (ids for a codec-less model).

    A text model stops at end-of-text, which is not printed; an empty prompt starts from it.
    """
    bounded_int(max_new_tokens, "--max-new-tokens", 1, MAX_NEW_TOKENS, high_open=False)
    bounded_int(num_samples, "--num-samples", 1)
    finite_float(temperature, "--temperature (0 = greedy)", 0.0)
    if top_k is not None:
        bounded_int(top_k, "--top-k", 1)
    if top_p is not None:
        finite_float(top_p, "--top-p", 0.0, 1.0, low_open=True)
    dev = resolve_device(device)
    model = load_model(checkpoint, device=dev, overrides=overrides)
    codec = model.codec
    vocab = model.config.vocab_size
    if codec is not None:
        ids, stop = (codec.encode(prompt) if prompt else [codec.eot]), codec.eot
    else:
        try:
            ids = [int(t) for t in prompt.split()] if prompt else [0]
        except ValueError:
            raise PrismError("this checkpoint records no tokenizer: the prompt must be token ids, "
                             "separated by spaces") from None
        stop = None
    if not ids or max(ids) >= vocab or min(ids) < 0:
        raise PrismError(f"prompt token ids must be in [0, {vocab})")
    if len(ids) > model.max_positions:
        raise PrismError(f"the prompt has {len(ids)} tokens; this model reads at most {model.max_positions} "
                         "(model.block_size): shorten it")
    generator = torch.Generator(device=dev).manual_seed(seed)
    texts = []
    for _ in range(num_samples):
        out = generate(model, torch.tensor([ids], device=dev), max_new_tokens, temperature=temperature, top_k=top_k,
                       top_p=top_p, stop_token=stop, generator=generator)
        new = out[0, len(ids):].tolist()
        if codec is None:
            texts.append(" ".join(map(str, ids + new)))
            continue
        if codec.eot in new:
            new = new[: new.index(codec.eot)]
        texts.append(prompt + codec.decode(new))
    return texts
