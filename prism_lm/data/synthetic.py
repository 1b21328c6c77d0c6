"""Synthetic recall tasks that small models learn on a CPU, with their answers annotated.

Two tasks, each a stream of short documents whose answer positions are ``Dependency`` annotations
(the same format as the embedded corpus), so selectivity, recall loss, answer accuracy and the
stream ablations work on them unchanged:
- ``mqar`` (multi-query associative recall; Arora et al. 2023, "Zoology"): ``pairs`` key-value
  pairs, then ``queries`` of the keys again in a shuffled order, each followed by its value. Every
  query's value is annotated: the token that predicts it is the repeated key, and its antecedent is
  the value's first occurrence (what an induction head attends to). Keys are distinct within a
  document and drawn from their own words, values from others, so a value is predictable only by
  recall. Answer accuracy (argmax at the annotated positions) is Zoology's measure. Its look-alike
  is elimination: a reader that names one of the document's values whose key has not been asked yet,
  with no key-value recall at all, scores ``elimination_accuracy(pairs, queries)`` (0.52 at 4 pairs
  and 4 queries, where the last answer is forced). GPT-RoPE trained 12000 steps on that task sat at
  exactly this floor (per query 0.30, 0.35, 0.51, 1.00 against 1/4, 1/3, 1/2, 1), so the default asks
  half the keys (floor 0.16 at 8 pairs) and a gate on answer accuracy must clear the floor.
- ``induction`` (copy): a run of distinct words, its length drawn per document from
  [``min_length``, ``length``] (default min_length 0: half of length), then the same words again;
  every word of the copy after its first is annotated, its antecedent the same word in the first
  run. The length varies so that no fixed lag finds the answer: a head must match content.
Design choices:
- Every key, value and word is one GPT-2 token with a leading space (checked against the tokenizer
  when the word list is built), so a document of P pairs and Q queries is exactly 2·(P + Q) tokens
  and an annotation points at one token.
- Document ``i`` of a seed is always the same text (its own ``random.Random``), so a prepared task
  is reproducible from its spec alone.
- The source spec is ``synthetic:TASK:N[:key=value,...]``; ``parse_task`` checks every key and range
  and says what it accepts.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass

from prism_lm.data.embedded import KINDS, Dependency, Story
from prism_lm.errors import PrismError

TASK_KINDS = {"mqar": "mqar", "induction": "copy"}  # task -> the annotation kind of its answers
ANNOTATION_KINDS = (*KINDS, *TASK_KINDS.values())  # every annotation kind; its index is the kind id in shards
DEFAULTS = {"mqar": {"pairs": 8, "queries": 4, "vocab": 64, "seed": 0},
            "induction": {"length": 16, "min_length": 0, "vocab": 128, "seed": 0}}
LIMITS = {"pairs": (1, 1024), "queries": (1, 1024), "vocab": (1, 8192), "length": (2, 2048), "min_length": (0, 2048),
          "seed": (0, 2**31 - 1)}
_WORD = re.compile(r"Ġ[a-z]{3,8}")


@dataclass(frozen=True)
class Task:
    name: str
    count: int
    params: dict[str, int]

    @property
    def kind(self) -> str:
        return TASK_KINDS[self.name]

    def document(self, i: int) -> Story:
        rng = random.Random(f"{self.name}:{self.params['seed']}:{i}")
        return _mqar(rng, **self.params) if self.name == "mqar" else _induction(rng, **self.params)


def parse_task(spec: str) -> Task:
    """``synthetic:TASK:N[:key=value,...]`` checked: a known task, N ≥ 1, known keys within range."""
    usage = (f"synthetic source must be synthetic:TASK:N[:key=value,...] with TASK one of {', '.join(DEFAULTS)}, "
             f"got {spec!r}")
    parts = spec.split(":")
    if len(parts) not in (3, 4) or parts[1] not in DEFAULTS:
        raise PrismError(usage)
    task = parts[1]
    try:
        count = int(parts[2])
    except ValueError:
        raise PrismError(usage) from None
    if count < 1:
        raise PrismError(f"{spec}: N (documents) must be >= 1, got {count}")
    params = dict(DEFAULTS[task])
    for item in filter(None, parts[3].split(",") if len(parts) == 4 else []):
        key, _, value = item.partition("=")
        if key not in params:
            raise PrismError(f"{spec}: unknown {task} key {key!r} (known: {', '.join(params)})")
        try:
            params[key] = int(value)
        except ValueError:
            raise PrismError(f"{spec}: {key} must be an integer, got {value!r}") from None
        lo, hi = LIMITS[key]
        if not lo <= params[key] <= hi:
            raise PrismError(f"{spec}: {key} must be in [{lo}, {hi}], got {params[key]}")
    _check_sizes(spec, task, params)
    return Task(task, count, params)


def _check_sizes(spec: str, task: str, params: dict[str, int]) -> None:
    words = len(word_pool())
    if task == "mqar":
        if params["queries"] > params["pairs"]:
            raise PrismError(f"{spec}: queries ({params['queries']}) cannot exceed pairs ({params['pairs']})")
        if params["pairs"] > params["vocab"]:
            raise PrismError(f"{spec}: pairs ({params['pairs']}) need as many distinct keys: vocab >= pairs")
        need = 2 * params["vocab"]
    else:
        if params["min_length"] > params["length"] or params["min_length"] == 1:
            raise PrismError(f"{spec}: min_length must be 0 (half of length) or in [2, length], got "
                             f"{params['min_length']}")
        if params["length"] > params["vocab"]:
            raise PrismError(f"{spec}: length ({params['length']}) distinct words need vocab >= length")
        need = params["vocab"]
    if need > words:
        raise PrismError(f"{spec}: needs {need} one-token words, GPT-2 has {words} of the kind used here")


def elimination_accuracy(pairs: int, queries: int) -> float:
    """MQAR's answer accuracy without recall: the q-th query (from 0) answered by a uniform pick among
    the values of the pairs not yet asked (1 / (pairs - q)), averaged over the queries."""
    return sum(1.0 / (pairs - q) for q in range(queries)) / queries


@functools.lru_cache(maxsize=1)
def word_pool() -> tuple[str, ...]:
    """Lower-case words of 3-8 letters that GPT-2 encodes, with a leading space, as one token; in
    token-id order (GPT-2's merge order, roughly by frequency), so the pool never changes."""
    import json

    from prism_lm.data.tokenizer import gpt2_encoding, gpt2_files

    enc = gpt2_encoding()
    ranked = sorted((rank, text) for text, rank in json.loads(gpt2_files()[0]).items() if _WORD.fullmatch(text))
    return tuple(text[1:] for rank, text in ranked if enc.encode_ordinary(" " + text[1:]) == [rank])


def _writer(words: list[str]) -> tuple[str, list[int]]:
    """The text of ``words`` (each after one space) and each word's character start."""
    starts, at = [], 0
    for w in words:
        starts.append(at + 1)
        at += 1 + len(w)
    return "".join(" " + w for w in words), starts


def _mqar(rng: random.Random, pairs: int, queries: int, vocab: int, seed: int) -> Story:
    pool = word_pool()
    keys = rng.sample(pool[:vocab], pairs)
    values = [rng.choice(pool[vocab:2 * vocab]) for _ in range(pairs)]
    asked = rng.sample(range(pairs), queries)
    words = [w for k, v in zip(keys, values, strict=True) for w in (k, v)]
    words += [w for i in asked for w in (keys[i], values[i])]
    text, starts = _writer(words)
    deps = []
    for q, i in enumerate(asked):
        answer, first = 2 * pairs + 2 * q + 1, 2 * i + 1
        deps.append(Dependency("mqar", starts[answer], starts[answer] + len(values[i]),
                               starts[first], starts[first] + len(values[i])))
    return Story(text, tuple(deps))


def _induction(rng: random.Random, length: int, min_length: int, vocab: int, seed: int) -> Story:
    length = rng.randint(min_length or max(2, length // 2), length)
    run = rng.sample(word_pool()[:vocab], length)
    text, starts = _writer(run + run)
    deps = tuple(Dependency("copy", starts[length + j], starts[length + j] + len(run[j]), starts[j],
                            starts[j] + len(run[j])) for j in range(1, length))
    return Story(text, deps)
