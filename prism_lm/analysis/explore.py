"""``prism explore``: one self-contained HTML page to look at every head's attention on a text.

The page needs no server and no network: the probe's tokens, every layer's attention maps, per-head
statistics (``heads.pattern_metrics`` on the probe) and λ per layer are embedded as JSON, drawn by
a few lines of inline JavaScript on canvases. Choose a layer and a head: the head's maps for each
stream (PRISM: signal and noise side by side; GPT: its one stream; DIFF: positive and negative)
are drawn, with the head's statistics beside each. Hover a token: its row (where it attends) is
highlighted in every map and the tokens are shaded by that attention; the column shows where it
is attended from. ``#layer=L&head=H&hover=I`` in the URL selects the same from a link.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import torch

from prism_lm.analysis.capture import capture_attention
from prism_lm.analysis.heads import pattern_metrics
from prism_lm.checkpoint import load_codec, load_model, resolve_checkpoint_dir
from prism_lm.errors import PrismError

# a story in the embedded corpus's words (so compact-vocabulary models can read it) with a recall of "key"
DEFAULT_TEXT = ("Once upon a time, there was a little girl named Lily. One day, she found a shiny key in the "
                "garden. She had a pet frog named Spot. She ate an apple for lunch. She picked up the shiny key")
MAX_TOKENS = 160
STATS = ("mean_distance", "entropy", "mass_within_8")


@torch.no_grad()
def explorer_data(source: str | Path, text: str | None = None) -> dict:
    """Everything the page shows, as plain JSON-able data."""
    ckpt = resolve_checkpoint_dir(source)
    model, codec = load_model(ckpt), load_codec(ckpt)
    if codec is None:
        raise PrismError(f"{ckpt} records no tokenizer and its vocabulary is not GPT-2's: no text to explore with")
    text = text or DEFAULT_TEXT
    ids = codec.encode(text)
    limit = min(MAX_TOKENS, model.config.block_size)
    if not ids:
        raise PrismError("--text is empty")
    if len(ids) > limit:
        raise PrismError(f"--text has {len(ids)} tokens; the explorer shows at most {limit}")
    cache = capture_attention(model, torch.tensor([ids]))
    layers = []
    for layer, block in enumerate(model.blocks):
        maps = cache[f"blocks.{layer}.attn.hook_pattern"][0]  # (S*H, T, T)
        metrics = pattern_metrics(maps[None])
        streams = list(cache.streams[layer])
        heads = cache.heads_per_stream[layer]
        lam = block.attn.current_lambda()
        layers.append({
            "streams": streams, "heads": heads, "lambda": None if lam is None else float(lam),
            "maps": [[[round(float(v), 4) for v in row] for row in maps[k]] for k in range(maps.shape[0])],
            "stats": [{m: float(metrics[m][k]) for m in STATS} for k in range(maps.shape[0])],
        })
    cfg = model.config
    return {"checkpoint": str(ckpt), "attention": cfg.attention, "n_layer": cfg.n_layer, "text": text,
            "tokens": [codec.decode([i]) for i in ids], "layers": layers}


def write_explorer(source: str | Path, out: str | Path, text: str | None = None) -> Path:
    """Write the page to ``out`` (a new file, written whole under a temporary name; never overwrites)."""
    out = Path(out)
    if out.exists():
        raise PrismError(f"refusing to overwrite {out}; choose a new --out")
    page = render(explorer_data(source, text))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


def render(data: dict) -> str:
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    title = html.escape(f"prism-lm attention explorer: {data['checkpoint']}")
    return PAGE.replace("%TITLE%", title).replace("%DATA%", payload)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>%TITLE%</title>
<style>
body{font-family:sans-serif;margin:16px;max-width:1200px}
#controls{margin:8px 0}#controls label{margin-right:16px}
#maps{display:flex;gap:24px;flex-wrap:wrap}.panel h3{margin:4px 0;font-size:14px}
.panel canvas{border:1px solid #ccc;image-rendering:pixelated}
.stats{font-size:12px;color:#333;margin:4px 0}
#tokens{line-height:2;margin-top:12px}#tokens span{padding:2px 1px;border-radius:3px;cursor:default}
#tokens span.hovered{outline:2px solid #d33}
#lambdas{font-size:12px;color:#555}
</style></head><body>
<h2>%TITLE%</h2>
<div id="controls">
 <label>layer <select id="layer"></select></label>
 <label>head <select id="head"></select></label>
 <span id="lambdas"></span>
</div>
<div id="maps"></div>
<div id="tokens"></div>
<script id="data" type="application/json">%DATA%</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const T = D.tokens.length, CELL = Math.max(3, Math.min(10, Math.floor(420 / T)));
const state = {layer: D.n_layer - 1, head: 0, hover: null};
const layerSel = document.getElementById("layer"), headSel = document.getElementById("head");
D.layers.forEach((_, i) => layerSel.add(new Option(String(i), String(i))));
document.getElementById("lambdas").textContent = "λ per layer: " + D.layers.map(
  (l, i) => i + ": " + (l.lambda === null ? "–" : l.lambda.toFixed(4))).join(", ");
const tokenBox = document.getElementById("tokens");
D.tokens.forEach((tok, i) => {
  const s = document.createElement("span");
  s.textContent = tok; s.dataset.index = String(i);
  s.addEventListener("mouseenter", () => { state.hover = i; draw(); });
  s.addEventListener("mouseleave", () => { state.hover = null; draw(); });
  tokenBox.appendChild(s);
});
function fillHeads() {
  const heads = D.layers[state.layer].heads;
  headSel.innerHTML = "";
  for (let h = 0; h < heads; h++) headSel.add(new Option(String(h), String(h)));
  state.head = Math.min(state.head, heads - 1); headSel.value = String(state.head);
}
function mapOf(layer, stream, head) { const L = D.layers[layer]; return L.maps[stream * L.heads + head]; }
function draw() {
  const L = D.layers[state.layer], box = document.getElementById("maps");
  box.innerHTML = "";
  let signature = "";
  L.streams.forEach((name, s) => {
    const m = mapOf(state.layer, s, state.head), k = s * L.heads + state.head, st = L.stats[k];
    const panel = document.createElement("div"); panel.className = "panel";
    panel.innerHTML = "<h3>" + name + " head " + state.head + "</h3><div class='stats'>mean distance " +
      st.mean_distance.toFixed(2) + " · entropy " + st.entropy.toFixed(2) + " · mass within 8 " +
      st.mass_within_8.toFixed(2) + "</div>";
    const c = document.createElement("canvas"); c.width = c.height = T * CELL; c.dataset.stream = name;
    const g = c.getContext("2d");
    for (let i = 0; i < T; i++) for (let j = 0; j <= i; j++) {
      const v = Math.sqrt(m[i][j]); g.fillStyle = "rgba(30,60,200," + v.toFixed(3) + ")";
      g.fillRect(j * CELL, i * CELL, CELL, CELL);
    }
    if (state.hover !== null) {
      g.strokeStyle = "#d33"; g.lineWidth = 2;
      g.strokeRect(0, state.hover * CELL, T * CELL, CELL);
      g.strokeStyle = "#e90"; g.strokeRect(state.hover * CELL, 0, CELL, T * CELL);
    }
    c.addEventListener("mousemove", ev => {
      const i = Math.floor(ev.offsetY / CELL); if (i !== state.hover && i >= 0 && i < T) { state.hover = i; draw(); }
    });
    signature += name + ":" + m.map(r => r.reduce((a, b) => a + b * 7.31, 0).toFixed(3)).join(",") + ";";
    panel.appendChild(c); box.appendChild(panel);
  });
  box.dataset.signature = signature;
  box.dataset.layer = String(state.layer); box.dataset.head = String(state.head);
  const row = state.hover === null ? null : mapOf(state.layer, 0, state.head)[state.hover];
  tokenBox.querySelectorAll("span").forEach((s, j) => {
    s.classList.toggle("hovered", j === state.hover);
    s.style.background = row && j <= state.hover ? "rgba(220,50,50," + Math.sqrt(row[j]).toFixed(3) + ")" : "";
  });
  tokenBox.dataset.hover = state.hover === null ? "" : String(state.hover);
}
layerSel.addEventListener("change", () => { state.layer = Number(layerSel.value); fillHeads(); draw(); });
headSel.addEventListener("change", () => { state.head = Number(headSel.value); draw(); });
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.has("layer")) state.layer = Math.min(D.n_layer - 1, Math.max(0, Number(hash.get("layer"))));
if (hash.has("head")) state.head = Number(hash.get("head"));
if (hash.has("hover")) state.hover = Number(hash.get("hover"));
layerSel.value = String(state.layer); fillHeads(); draw();
</script></body></html>
"""
