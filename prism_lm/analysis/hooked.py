"""TransformerLens hook points on a prism-lm model: ``hooked(model)`` (needs ``prism-lm[interp]``).

Design choices:
- The model (pure torch, ``model/``) carries identity hook sites with TransformerLens's names and
  shapes (``Block.HOOK_SITES``, ``AttentionKind.HOOK_SITES``, ``hook_embed``, ``hook_pos_embed``).
  ``hooked`` swaps them for TransformerLens's own ``HookPoint`` and wraps the model in a
  ``HookedRootModule``, so ``run_with_cache``, ``run_with_hooks``, ``hooks()``, ``add_hook`` and
  ``ActivationCache`` are TransformerLens's code, not an imitation. Without the extra the model
  runs as always (an identity call per site; measured in benchmarks/RESULTS.md).
- Names are TransformerLens's: ``blocks.{l}.hook_resid_pre``, ``blocks.{l}.attn.hook_z``, ... The
  wrapper registers the model's own children under their own names, so the paths match.
- ``hook_attn_scores`` and ``hook_pattern`` exist on the eager attention path only; the forward
  switches to it whenever a hook sits on one of them (SDPA otherwise).
- PRISM and DIFF stack their streams on the head axis; ``blocks.{l}.attn.hook_z_noise`` (and
  ``_signal``, ``_positive``, ``_negative``; also for hook_q, hook_k, hook_v, hook_attn_scores,
  hook_pattern) name one stream's heads: a hook there sees and may replace those heads only, and
  ``run_with_cache`` returns them as their own entries.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from prism_lm.errors import PrismError
from prism_lm.model import PrismLM

EAGER_SITES = ("hook_attn_scores", "hook_pattern")
_STREAM_NAME = re.compile(r"^(blocks\.(\d+)\.attn\.(hook_q|hook_k|hook_v|hook_z|hook_attn_scores|hook_pattern))_(\w+)$")


def _transformer_lens():
    try:
        from transformer_lens import ActivationCache, HookedRootModule
        from transformer_lens.hook_points import HookPoint
    except ImportError:
        raise PrismError("TransformerLens hooks need the interp extra: pip install 'prism-lm[interp]'") from None
    return HookedRootModule, HookPoint, ActivationCache


def hooked(model: PrismLM):
    """``model`` with TransformerLens HookPoints at every site, wrapped in a HookedRootModule
    (the model itself is changed in place: its sites become HookPoints, still identities unhooked)."""
    HookedRootModule, HookPoint, ActivationCache = _transformer_lens()
    methods = {name: globals()[f"_{name.lstrip('_')}"] for name in (
        "forward", "run_with_cache", "stream_names", "stream_index", "resolve", "add_hook", "_enable_hook")}
    # TransformerLens is an optional import, so the class is made here, from the functions below
    HookedPrism = type("HookedPrism", (HookedRootModule,), {**methods, "__init__": _init, "hook_point": HookPoint,
                                                            "activation_cache": ActivationCache})
    return HookedPrism(model)


def _init(self, inner: PrismLM) -> None:
    super(type(self), self).__init__()
    object.__setattr__(self, "model", inner)  # not a child: hook names start at blocks.
    for module in inner.modules():
        for name, child in list(module.named_children()):
            if name.startswith("hook_") and isinstance(child, nn.Identity):
                setattr(module, name, self.hook_point())
    for name, child in inner.named_children():
        self.add_module(name, child)
    self.cfg = inner.config
    self.setup()
    self.train(inner.training)  # a new module starts in training mode: keep the model's (load_model gives eval)


def _forward(self, tokens: torch.Tensor, eager: bool | None = None) -> torch.Tensor:
    """tokens (B, T) -> logits (B, T, V)."""
    if eager is None:
        eager = any(hp.fwd_hooks for name, hp in self.hook_dict.items() if name.endswith(EAGER_SITES))
    return self.model(tokens, eager=eager).logits


def _enable_hook(self, name, hook, dir="fwd"):
    """Where TransformerLens's ``hooks()`` and ``run_with_hooks`` add a hook: a per-stream name is
    resolved to its site first."""
    return super(type(self), self)._enable_hook(*self.resolve(name, hook), dir=dir)


def _add_hook(self, name, hook, dir="fwd", **kwargs):
    """TransformerLens's ``add_hook``, per-stream names included."""
    return super(type(self), self).add_hook(*self.resolve(name, hook), dir=dir, **kwargs)


def _run_with_cache(self, *args, names_filter=None, **kwargs):
    wanted = _as_filter(names_filter)
    streams = self.stream_names()
    base = {m.group(1) for n in streams if wanted(n) and (m := _STREAM_NAME.match(n))}
    eager = any(n.endswith(EAGER_SITES) and (wanted(n) or n in base) for n in self.hook_dict)
    logits, cache = super(type(self), self).run_with_cache(*args, names_filter=lambda n: wanted(n) or n in base,
                                                           eager=eager, **kwargs)
    for name in streams:
        m = _STREAM_NAME.match(name)
        if wanted(name) and m.group(1) in cache:
            axis, index = self.stream_index(int(m.group(2)), m.group(3), m.group(4))
            cache[name] = cache[m.group(1)].index_select(axis, index.to(cache[m.group(1)].device))
    for name in base - {n for n in self.hook_dict if wanted(n)}:
        cache.pop(name, None)
    return logits, self.activation_cache(cache, self)


def _stream_names(self) -> list[str]:
    """The per-stream hook names of every layer with more than one stream."""
    names = []
    for layer, block in enumerate(self.model.blocks):
        if len(block.attn.stream_names) > 1:
            shared_v = type(block.attn).name == "diff"
            sites = ("hook_q", "hook_k", "hook_z", *EAGER_SITES) + (() if shared_v else ("hook_v",))
            names += [f"blocks.{layer}.attn.{site}_{s}" for site in sites for s in block.attn.stream_names]
    return names


def _stream_index(self, layer: int, site: str, stream: str) -> tuple[int, torch.Tensor]:
    attn = self.model.blocks[layer].attn
    if stream not in attn.stream_names:
        raise PrismError(f"layer {layer} has streams {attn.stream_names}, not {stream!r}")
    if site == "hook_v" and type(attn).name == "diff":  # TransformerLens's setup sets module.name
        raise PrismError("DIFF's values are shared by a head's two maps: hook_v has no per-stream part")
    s = attn.stream_names.index(stream)
    index = torch.tensor([attn.map_index(s, h) for h in range(attn.n_head)])
    return (1 if site in EAGER_SITES else 2), index  # (B, maps, Tq, Tk) or (B, T, maps, D)


def _resolve(self, name, fn):
    """A per-stream name becomes a hook on the whole site that edits only that stream's heads."""
    if not isinstance(name, str) or name in self.hook_dict:
        return name, fn
    m = _STREAM_NAME.match(name)
    if not m or m.group(1) not in self.hook_dict:
        raise PrismError(f"no hook point {name!r} (see model.hook_dict)")
    axis, index = self.stream_index(int(m.group(2)), m.group(3), m.group(4))

    def on_stream(tensor, hook):
        part = tensor.index_select(axis, index.to(tensor.device))
        out = fn(part, hook)
        return tensor if out is None else tensor.index_copy(axis, index.to(tensor.device), out)

    return m.group(1), on_stream


def _as_filter(names_filter):
    if names_filter is None:
        return lambda name: True
    if isinstance(names_filter, str):
        return lambda name: name == names_filter
    if isinstance(names_filter, (list, tuple, set)):
        chosen = set(names_filter)
        return lambda name: name in chosen
    return names_filter
