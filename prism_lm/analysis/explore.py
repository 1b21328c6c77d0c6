"""``prism explore``: one self-contained HTML page to look at every head's attention on a text.

The page needs no server and no network: the probe's tokens, every layer's attention maps, per-head
statistics (``heads.pattern_metrics`` on the probe), λ and the size of what each stream adds, per
layer, are embedded as JSON and drawn by the inline script of ``explore.html`` on canvases.

What the page shows, and the choices behind it:
- One or more models on the same text, one row each (PRISM beside its GPT baseline): the models
  must tokenize the text alike, so every row reads the same tokens. Layer and head are chosen once
  and clamped to each model's own sizes.
- Per head, a map per stream (PRISM: signal and noise; DIFF: positive and negative; GPT: one) and,
  for two-stream kinds, the net map A_first − λ·A_second: the two streams' weights combined as the
  layer combines their outputs. The streams read different values (U_s, U_n), so the net map is the
  combination of weights, not of outputs; the layer's output sizes (mean ‖·‖ per token of the first
  stream's part, of λ times the second's, and of their difference) are printed beside it.
- Colour is √p by default so that small weights stay visible (a legend with ticks says so); linear
  p is one click away. The net map uses a diverging scale (blue above 0, red below).
- Token labels on both axes (every k-th token when the cells are too small for all of them), and
  a tooltip naming the query, the key and the weight under the pointer.
- Statistics per map: attention mass on the own token (lag 0), on lags 1–8 and beyond 8 (these
  sum to 1, so "local" is not self-attention), entropy relative to the uniform over the visible
  keys, the first position's (sink) mass and the mean attended distance.
- Hovering a token outlines its row in every map and shades the text by its attention in the
  chosen map (any stream, or the net map). ``#layer=L&head=H&hover=I`` selects the same from a link.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import torch

from prism_lm.analysis.capture import capture_attention
from prism_lm.analysis.heads import pattern_metrics
from prism_lm.checkpoint import load_model, resolve_checkpoint_dir
from prism_lm.errors import PrismError
from prism_lm.model.interventions import intervene

# a story in the embedded corpus's words (so compact-vocabulary models can read it) with a recall of "key"
DEFAULT_TEXT = ("Once upon a time, there was a little girl named Lily. One day, she found a shiny key in the "
                "garden. She had a pet frog named Spot. She ate an apple for lunch. She picked up the shiny key")
MAX_TOKENS = 160
STATS = ("mass_self", "mass_lags_1_8", "mass_beyond_8", "entropy_relative", "sink_first", "mean_distance")
TEMPLATE = Path(__file__).with_name("explore.html")


@torch.no_grad()
def _output_norms(model, ids: torch.Tensor) -> list[dict[str, float] | None]:
    """Per layer, the mean per-token ‖·‖ of what its attention adds: the first stream's part, the
    second's (λ included, sign as added) and the whole, the other layers untouched (None for a
    one-stream layer). One unmodified pass gives every layer's whole; each part is one pass."""
    seen: dict[int, float] = {}

    def keep(layer):
        return lambda m, i, out: seen.__setitem__(layer, out[0].float().norm(dim=-1).mean().item())

    hooks = [b.hook_attn_out.register_forward_hook(keep(k)) for k, b in enumerate(model.blocks)]
    try:
        model(ids)
        whole = dict(seen)
        out = []
        for layer, block in enumerate(model.blocks):
            streams = block.attn.stream_names
            if len(streams) != 2:
                out.append(None)
                continue
            parts = {"net": whole[layer]}
            for kept, silenced in ((streams[0], streams[1]), (streams[1], streams[0])):
                with intervene(model, zero_streams=[silenced], layers=[layer]):
                    model(ids)
                parts[kept] = seen[layer]
            out.append(parts)
    finally:
        for hook in hooks:
            hook.remove()
    return out


@torch.no_grad()
def model_data(model, ckpt: Path, ids: list[int]) -> dict:
    """One model's rows of the page: per layer its maps, statistics, λ and output sizes."""
    model.eval()
    limit = min(MAX_TOKENS, model.config.block_size)
    if len(ids) > limit:
        raise PrismError(f"--text has {len(ids)} tokens; the explorer shows at most {limit} for {ckpt}")
    if max(ids) >= model.config.vocab_size:
        raise PrismError(f"--text holds token id {max(ids)}, outside {ckpt}'s vocabulary ({model.config.vocab_size})")
    tokens = torch.tensor([ids], device=next(model.parameters()).device)
    cache = capture_attention(model, tokens)
    norms = _output_norms(model, tokens)
    layers = []
    for layer, block in enumerate(model.blocks):
        maps = cache[f"blocks.{layer}.attn.hook_pattern"][0]  # (S*H, T, T)
        metrics = pattern_metrics(maps[None])
        lam = block.attn.current_lambda()
        layers.append({
            "streams": list(cache.streams[layer]), "heads": cache.heads_per_stream[layer],
            "lambda": None if lam is None else float(lam),
            "maps": [[[round(float(v), 4) for v in row] for row in maps[k]] for k in range(maps.shape[0])],
            "stats": [{m: float(metrics[m][k]) for m in STATS} for k in range(maps.shape[0])],
            "output_norms": norms[layer],
        })
    cfg = model.config
    return {"checkpoint": str(ckpt), "attention": cfg.attention, "n_layer": cfg.n_layer, "layers": layers}


def explorer_data(sources: str | Path | list, text: str | None = None, device: str = "cpu",
                  overrides: list[str] = ()) -> dict:
    """Everything the page shows, as plain JSON-able data: the text's tokens and each model's rows
    (``overrides``: ``load_model``'s evaluation-time changes, applied to every model)."""
    from prism_lm.devices import resolve_device

    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    if not sources:
        raise PrismError("give at least one checkpoint")
    text = DEFAULT_TEXT if text is None else text
    models, ids, tokens = [], None, None
    for source in sources:
        ckpt = resolve_checkpoint_dir(source)
        model = load_model(ckpt, device=resolve_device(device), overrides=overrides)
        codec = model.codec  # the checkpoint's own tokenizer (None: not GPT-2's, none recorded)
        if codec is None:
            raise PrismError(f"{ckpt} records no tokenizer and its vocabulary is not GPT-2's: no text to explore with")
        these = codec.encode(text)
        if not these or not text.strip():
            raise PrismError("--text is empty; give a text, or leave it out for the default story")
        if ids is not None and these != ids:
            raise PrismError(f"{ckpt} tokenizes the text differently from {models[0]['checkpoint']}: "
                             "models shown side by side must share a tokenizer")
        ids, tokens = these, [codec.decode([i]) for i in these]
        models.append(model_data(model, ckpt, ids))
    return {"text": text, "tokens": tokens, "models": models}


def write_explorer(sources: str | Path | list, out: str | Path, text: str | None = None, device: str = "cpu",
                   overrides: list[str] = ()) -> Path:
    """Write the page to ``out`` (a new file, written whole under a temporary name; never overwrites)."""
    out = Path(out)
    if out.exists():
        raise PrismError(f"refusing to overwrite {out}; choose a new --out")
    page = render(explorer_data(sources, text, device, overrides))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


def render(data: dict) -> str:
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    names = " | ".join(m["checkpoint"] for m in data["models"])
    title = html.escape(f"prism-lm attention explorer: {names}")
    return TEMPLATE.read_text(encoding="utf-8").replace("%TITLE%", title).replace("%DATA%", payload)
