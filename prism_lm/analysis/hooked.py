"""TransformerLens on a prism-lm model: ``hooked(model, codec)`` (needs ``prism-lm[interp]``).

Design choices:
- The model (pure torch, ``model/``) carries identity hook sites with TransformerLens's names and
  shapes (``Block.HOOK_SITES``, ``AttentionKind.HOOK_SITES``, the MLP's ``hook_pre``/``hook_post``,
  ``hook_embed``, ``hook_pos_embed``). ``hooked`` swaps them for TransformerLens's own ``HookPoint``,
  swaps each LayerNorm for one that exposes ``hook_scale`` and ``hook_normalized`` (same parameters,
  the same numbers), and wraps the model in a ``HookedRootModule``, so ``run_with_cache``,
  ``run_with_hooks``, ``hooks()``, ``add_hook``, ``ActivationCache`` and ``transformer_lens.patching``
  are TransformerLens's code, not an imitation. Without the extra the model runs as always.
- Names are TransformerLens's: ``blocks.{l}.hook_resid_pre``, ``blocks.{l}.attn.hook_z``,
  ``blocks.{l}.ln1.hook_scale``, ``ln_final.hook_normalized``, ... (the model's ``ln_1``, ``ln_2`` and
  ``ln_f`` are renamed in the hook names only; the weights keep theirs).
- ``cfg`` is TransformerLens's own ``TransformerBridgeConfig`` (TL 4's config class; ``model.config``
  stays prism's). Its ``n_heads`` counts the maps that have their own output: PRISM's signal heads
  then its noise heads (2H; L0H0..H-1 signal, L0H{H}.. noise), GPT's H, DIFF's 2H (map 2i positive
  and 2i + 1 negative of head i). ``hook_result`` (B, T, n_heads, C) is each map's share of the
  attention output, the noise stream's carrying its −λ and PRISM's 1/sqrt(2HR); the maps sum to
  ``hook_attn_out`` less b_O, so TransformerLens's decompositions add up to the logits.
- Weights in TransformerLens's layout: W_Q = W_K = W_V = U_h and W_O = ±U_hᵀ per map for PRISM
  (``AttentionKind.head_weights``); W_E, W_pos, W_U (= W_Eᵀ, tied), W_in, W_out, the biases, QK and
  OV as ``FactoredMatrix``. The final LayerNorm is not folded into W_U: ``tokens_to_residual_directions``
  returns its weight times W_U's column, and ``b_U`` its bias through W_U, so a normalized residual
  dotted with the direction, plus b_U, is the logit.
- Text goes through the checkpoint's codec (``to_tokens``, ``to_str_tokens``, ``to_string``,
  ``to_single_token``, ``generate``); ``tokenizer`` is that codec. BOS is the document separator,
  prepended only on request (``default_prepend_bos`` is False: the models are trained on windows that
  need not open on one, unless their run used ``data.sampler = "bos"``).
- ``hook_attn_scores`` and ``hook_pattern`` exist on the eager attention path only; the forward
  switches to it whenever a hook sits on one of them (SDPA otherwise).
- PRISM and DIFF stack their streams on the head axis; ``blocks.{l}.attn.hook_z_noise`` (and
  ``_signal``, ``_positive``, ``_negative``; also for hook_q, hook_k, hook_v, hook_attn_scores,
  hook_pattern, hook_result) name one stream's heads: a hook there sees and may replace those heads
  only, ``run_with_cache`` returns them as their own entries, and ``hooks()`` and ``add_hook`` take them.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from prism_lm.analysis.lens import LensWeights
from prism_lm.data.tokenizer import Codec
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM
from prism_lm.model.loss import lm_cross_entropy

EAGER_SITES = ("hook_attn_scores", "hook_pattern")
_STREAM_SITES = "hook_q|hook_k|hook_v|hook_z|hook_attn_scores|hook_pattern|hook_result"
_STREAM_NAME = re.compile(rf"^(blocks\.(\d+)\.attn\.({_STREAM_SITES}))_(\w+)$")
_LN_NAMES = ((re.compile(r"^(blocks\.\d+)\.ln_1(\.|$)"), r"\1.ln1\2"), (re.compile(r"^(blocks\.\d+)\.ln_2(\.|$)"),
                                                                         r"\1.ln2\2"),
             (re.compile(r"^ln_f(\.|$)"), r"ln_final\1"))
RETURN_TYPES = ("logits", "loss", "both", None)


def _transformer_lens():
    try:
        from transformer_lens import ActivationCache, HookedRootModule
        from transformer_lens.hook_points import HookPoint
    except ImportError:
        raise PrismError("TransformerLens hooks need the interp extra: pip install 'prism-lm[interp]'") from None
    return HookedRootModule, HookPoint, ActivationCache


def hooked(model: PrismLM, codec=None):
    """``model`` with TransformerLens HookPoints at every site, wrapped in a HookedRootModule.

    ``codec`` (the checkpoint's, ``checkpoint.load_codec``; GPT-2 BPE when None) backs the text
    methods. The model itself is changed in place: its sites become HookPoints (identities unhooked)
    and its LayerNorms expose their scale, with the same parameters and outputs."""
    HookedRootModule, HookPoint, ActivationCache = _transformer_lens()
    # TransformerLens is an optional import, so the class is made here from the plain mixins
    cls = type("HookedPrism", (_HookedPrism, LensWeights, HookedRootModule),
               {"hook_point": HookPoint, "activation_cache": ActivationCache})
    return cls(model, codec)


def load_hooked(path, device: str = "cpu"):
    """A checkpoint (or run directory) as a hooked model with its own codec, in eval mode."""
    from prism_lm.checkpoint import load_codec, load_model

    return hooked(load_model(path, device=device), load_codec(path))


class _LensLayerNorm(nn.Module):
    """TransformerLens's LayerNorm on an existing ``nn.LayerNorm``'s parameters: hook_scale (B, T, 1)
    is sqrt(var + eps), hook_normalized (B, T, C) the output after weight and bias."""

    def __init__(self, norm: nn.LayerNorm, hook_point):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps
        self.hook_scale, self.hook_normalized = hook_point(), hook_point()

    def forward(self, x):
        x = x - x.mean(-1, keepdim=True)
        x = x / self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        x = x * self.weight if self.weight is not None else x
        return self.hook_normalized(x + self.bias if self.bias is not None else x)


def _lens_name(name: str) -> str:
    for pattern, replacement in _LN_NAMES:
        name = pattern.sub(replacement, name)
    return name


class _HookedPrism:
    """The wrapper's own methods (mixed into a HookedRootModule by ``hooked``)."""

    def __init__(self, inner: PrismLM, codec=None):
        super().__init__()
        object.__setattr__(self, "model", inner)  # not a child: hook names start at blocks.
        for module in list(inner.modules()):
            for name, child in list(module.named_children()):
                if name.startswith("hook_") and isinstance(child, nn.Identity):
                    setattr(module, name, self.hook_point())
                elif isinstance(child, nn.LayerNorm):
                    setattr(module, name, _LensLayerNorm(child, self.hook_point))
        for name, child in inner.named_children():
            self.add_module(name, child)
        self.tokenizer = codec if codec is not None else Codec()  # GPT-2 BPE
        self.cfg = self.lens_config()
        self.setup()
        self.train(inner.training)  # a new module starts in training mode: keep the model's (load_model gives eval)

    def setup(self) -> None:
        """TransformerLens's setup, then its names for the LayerNorms' hooks (ln1, ln2, ln_final)."""
        super().setup()
        self.mod_dict = {_lens_name(n): m for n, m in self.mod_dict.items()}
        self.hook_dict = {_lens_name(n): m for n, m in self.hook_dict.items()}
        for name, module in self.mod_dict.items():
            module.name = name

    def forward(self, input, return_type: str | None = "logits", loss_per_token: bool = False,
                prepend_bos: bool | None = None, eager: bool | None = None):
        """tokens (B, T) or text -> logits (B, T, V), the next-token loss, both, or None
        (``return_type`` as TransformerLens's); the loss is per token (B, T-1) with ``loss_per_token``."""
        if return_type not in RETURN_TYPES:
            raise PrismError(f"return_type must be one of {RETURN_TYPES}, not {return_type!r}")
        tokens = self.to_tokens(input, prepend_bos=prepend_bos) if isinstance(input, (str, list)) else input
        if eager is None:
            eager = any(hp.fwd_hooks for name, hp in self.hook_dict.items() if name.endswith(EAGER_SITES))
        logits = self.model(tokens, eager=eager).logits
        if return_type in ("logits", None):
            return logits if return_type else None
        loss = lm_cross_entropy(logits[:, :-1], tokens[:, 1:], "none" if loss_per_token else "mean")
        return loss if return_type == "loss" else (logits, loss)

    def _enable_hook(self, name, hook, dir="fwd"):
        """Where TransformerLens's ``hooks()`` and ``run_with_hooks`` add a hook: a per-stream name is
        resolved to its site first."""
        return super()._enable_hook(*self.resolve(name, hook), dir=dir)

    def add_hook(self, name, hook, dir="fwd", **kwargs):
        """TransformerLens's ``add_hook``, per-stream names included."""
        return super().add_hook(*self.resolve(name, hook), dir=dir, **kwargs)

    def run_with_cache(self, *args, names_filter=None, **kwargs):
        """TransformerLens's ``run_with_cache``; per-stream names are cut from their site's entry."""
        wanted = _as_filter(names_filter)
        streams = self.stream_names()
        base = {m.group(1) for n in streams if wanted(n) and (m := _STREAM_NAME.match(n))}
        eager = any(n.endswith(EAGER_SITES) and (wanted(n) or n in base) for n in self.hook_dict)
        logits, cache = super().run_with_cache(*args, names_filter=lambda n: wanted(n) or n in base,
                                               eager=eager, **kwargs)
        for name in streams:
            m = _STREAM_NAME.match(name)
            if wanted(name) and m.group(1) in cache:
                axis, index = self.stream_index(int(m.group(2)), m.group(3), m.group(4))
                cache[name] = cache[m.group(1)].index_select(axis, index.to(cache[m.group(1)].device))
        for name in base - {n for n in self.hook_dict if wanted(n)}:
            cache.pop(name, None)
        return logits, self.activation_cache(cache, self)

    def stream_names(self) -> list[str]:
        """The per-stream hook names of every layer with more than one stream."""
        names = []
        for layer, block in enumerate(self.model.blocks):
            if len(block.attn.stream_names) > 1:
                shared_v = type(block.attn).name == "diff"
                sites = ("hook_q", "hook_k", "hook_z", "hook_result", *EAGER_SITES) + (() if shared_v else ("hook_v",))
                names += [f"blocks.{layer}.attn.{site}_{s}" for site in sites for s in block.attn.stream_names]
        return names

    def stream_index(self, layer: int, site: str, stream: str) -> tuple[int, torch.Tensor]:
        """The head axis of ``site``'s tensor and the indices of ``stream``'s heads on it."""
        attn = self.model.blocks[layer].attn
        if stream not in attn.stream_names:
            raise PrismError(f"layer {layer} has streams {attn.stream_names}, not {stream!r}")
        if site == "hook_v" and type(attn).name == "diff":
            raise PrismError("DIFF's values are shared by a head's two maps: hook_v has no per-stream part")
        s = attn.stream_names.index(stream)
        index = torch.tensor([attn.map_index(s, h) for h in range(attn.n_head)])
        return (1 if site in EAGER_SITES else 2), index  # (B, maps, Tq, Tk) or (B, T, maps, D)

    def resolve(self, name, fn):
        """A per-stream name becomes a hook on the whole site that edits only that stream's heads."""
        if not isinstance(name, str) or name in self.hook_dict:
            return name, fn
        m = _STREAM_NAME.match(name)
        if not m or m.group(1) not in self.hook_dict:
            raise PrismError(f"no hook point {name!r} (see model.hook_dict and model.stream_names())")
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
