"""What TransformerLens's tools read from a model besides its hooks: its config, its weights in
TransformerLens's layout, the biases its decompositions add, and its text methods. A mixin of
``hooked``'s wrapper (``analysis/hooked.py``), which supplies ``self.model`` (the ``PrismLM``) and
``self.tokenizer`` (the checkpoint's codec).

Shapes follow TransformerLens: W_Q, W_K (n_layers, n_heads, C, Dk), W_V (n_layers, n_heads, C, Dv),
W_O (n_layers, n_heads, Dv, C), W_in (n_layers, C, d_mlp), W_out (n_layers, d_mlp, C), W_E (V, C),
W_pos (n_ctx, C), W_U (C, V). Heads are the maps with their own output (``hooked``'s docstring).
"""

from __future__ import annotations

import torch

from prism_lm.errors import PrismError


class LensWeights:
    """TransformerLens's config, weights, biases and text methods for ``self.model``."""

    # ------------------------------------------------------------------ config
    def lens_config(self):
        """TransformerLens's ``TransformerBridgeConfig`` for this model (TL 4's config class)."""
        from transformer_lens.config import TransformerBridgeConfig

        cfg, attn = self.model.config, self.model.blocks[0].attn
        w = attn.head_weights()
        return TransformerBridgeConfig(
            d_model=cfg.n_embd, d_head=w["W_Q"].size(-1), n_layers=cfg.n_layer, n_ctx=self.model.max_positions,
            n_heads=w["W_O"].size(0), d_vocab=cfg.vocab_size, d_mlp=4 * cfg.n_embd, act_fn="gelu",
            normalization_type="LN", model_name=f"prism-lm {cfg.attention}", original_architecture=cfg.attention,
            positional_embedding_type="standard" if self.model.wpe is not None else "rotary",
            default_prepend_bos=False, tokenizer_prepends_bos=False, use_attn_result=True,
            device=str(next(self.model.parameters()).device), dtype=next(self.model.parameters()).dtype)

    def head_labels(self) -> list[str]:
        """A label per TransformerLens head ("L0H5"), in words: "L0 noise 1" (layer, stream, head)."""
        labels = []
        for layer, block in enumerate(self.model.blocks):
            attn = block.attn
            where = {attn.map_index(s, h): f"{name} {h}" for s, name in enumerate(attn.stream_names)
                     for h in range(attn.n_head)}
            labels += [f"L{layer} {where[i]}" if i in where else f"L{layer}H{i}" for i in range(self.cfg.n_heads)]
        return labels

    # ------------------------------------------------------------------ weights
    def _stacked(self, key: str) -> torch.Tensor:
        """Every layer's attention weight ``key`` (``AttentionKind.head_weights``), stacked (n_layers, ...)."""
        return torch.stack([block.attn.head_weights()[key] for block in self.model.blocks])

    def _neurons(self, key: str) -> torch.Tensor:
        """Every layer's MLP weight ``key`` (``GeluMLP.neuron_weights``), stacked (n_layers, ...)."""
        if not all(hasattr(block.mlp, "neuron_weights") for block in self.model.blocks):
            raise PrismError(f"MLP kind {self.model.config.mlp!r} has no GELU neurons (W_in, W_out)")
        return torch.stack([block.mlp.neuron_weights()[key] for block in self.model.blocks])

    W_Q = property(lambda self: self._stacked("W_Q"))  # (n_layers, n_heads, C, Dk)
    W_K = property(lambda self: self._stacked("W_K"))  # (n_layers, n_heads, C, Dk)
    W_V = property(lambda self: self._stacked("W_V"))  # (n_layers, n_heads, C, Dv)
    W_O = property(lambda self: self._stacked("W_O"))  # (n_layers, n_heads, Dv, C)
    b_O = property(lambda self: self._stacked("b_O"))  # (n_layers, C)
    W_in = property(lambda self: self._neurons("W_in"))  # (n_layers, C, d_mlp)
    b_in = property(lambda self: self._neurons("b_in"))  # (n_layers, d_mlp)
    W_out = property(lambda self: self._neurons("W_out"))  # (n_layers, d_mlp, C)
    b_out = property(lambda self: self._neurons("b_out"))  # (n_layers, C)

    @property
    def W_E(self) -> torch.Tensor:
        return self.model.wte.weight

    @property
    def W_pos(self) -> torch.Tensor:
        if self.model.wpe is None:
            raise PrismError("this model has no learned position embedding (RoPE only): no W_pos")
        return self.model.wpe.weight

    @property
    def W_U(self) -> torch.Tensor:
        return self.model.lm_head.weight.t()  # tied: W_U = W_Eᵀ

    @property
    def b_U(self) -> torch.Tensor:
        """The final LayerNorm's bias read out by W_U (zeros without one): the logit a normalized
        residual of zero would give."""
        bias = getattr(self.model.ln_f, "bias", None)
        return bias @ self.W_U if bias is not None else self.W_U.new_zeros(self.W_U.size(1))

    @property
    def ln_final(self):
        """The final LayerNorm under TransformerLens's name (the logit lens recomputes it per component)."""
        return self.model.ln_f

    @property
    def QK(self):
        """Each head's W_Q W_Kᵀ as a ``FactoredMatrix`` (RoPE acts between them and is not in it)."""
        from transformer_lens import FactoredMatrix

        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self):
        """Each head's W_V W_O as a ``FactoredMatrix``."""
        from transformer_lens import FactoredMatrix

        return FactoredMatrix(self.W_V, self.W_O)

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> torch.Tensor:
        """The biases the residual stream holds at the input of ``layer`` (its MLP with ``mlp_input``):
        every earlier b_O, every earlier b_out with ``include_mlp_biases`` (C,)."""
        if not self.model.blocks[0].mlp.residual:
            raise PrismError(f"MLP kind {self.model.config.mlp!r} replaces the residual stream: "
                             "it has no additive decomposition")
        total = self.W_E.new_zeros(self.cfg.d_model)
        for i in range(layer + (1 if mlp_input else 0)):
            total = total + self.model.blocks[i].attn.head_weights()["b_O"]
            if include_mlp_biases and i < layer:
                total = total + self.model.blocks[i].mlp.neuron_weights()["b_out"]
        return total

    def tokens_to_residual_directions(self, tokens) -> torch.Tensor:
        """The direction (C,) a normalized final residual is read along for each token's logit: the
        final LayerNorm's weight times W_U's column (the logit is that dot product plus b_U)."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        tokens = torch.as_tensor(tokens, device=self.W_U.device)
        directions = self.W_U[:, tokens].movedim(0, -1)  # (..., C)
        weight = getattr(self.model.ln_f, "weight", None)
        return directions * weight if weight is not None else directions

    # ------------------------------------------------------------------ text
    def to_tokens(self, input, prepend_bos: bool | None = None, move_to_device: bool = True) -> torch.Tensor:
        """Text (a string or a list of strings of one token length) -> ids (B, T) through the codec."""
        texts = [input] if isinstance(input, str) else list(input)
        bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        rows = [([self.tokenizer.eot] if bos else []) + self.tokenizer.encode(text) for text in texts]
        if len({len(r) for r in rows}) > 1:
            raise PrismError(f"texts of different token lengths {sorted({len(r) for r in rows})}: "
                             "tokenize them one by one (this wrapper does not pad)")
        tokens = torch.tensor(rows, dtype=torch.long)
        return tokens.to(self.cfg.device) if move_to_device else tokens

    def to_str_tokens(self, input, prepend_bos: bool | None = None) -> list[str]:
        """Each token of a text (or of ids (T,) / (1, T)) as its string."""
        ids = self.to_tokens(input, prepend_bos)[0] if isinstance(input, str) else torch.as_tensor(input).flatten()
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def to_string(self, tokens):
        """Ids (T,) -> text; (B, T) -> a list of texts."""
        tokens = torch.as_tensor(tokens)
        if tokens.dim() == 2:
            return [self.tokenizer.decode(row.tolist()) for row in tokens]
        return self.tokenizer.decode(tokens.flatten().tolist())

    def to_single_token(self, text: str) -> int:
        ids = self.tokenizer.encode(text)
        if len(ids) != 1:
            raise PrismError(f"{text!r} is {len(ids)} tokens, not one")
        return ids[0]

    def generate(self, input, max_new_tokens: int = 10, temperature: float = 1.0, top_k: int | None = None,
                 stop_at_eos: bool = True, return_type: str = "input", prepend_bos: bool | None = None, seed=None):
        """Continue a text (or ids (B, T)) with the model's own decoding loop (``model/generate.py``);
        returns text for text input (``return_type = "input"``), else ids, or "str"/"tokens" as asked."""
        from prism_lm.model.generate import generate

        tokens = self.to_tokens(input, prepend_bos) if isinstance(input, (str, list)) else torch.as_tensor(input)
        generator = None if seed is None else torch.Generator(device=tokens.device).manual_seed(seed)
        with torch.no_grad():
            out = generate(self.model, tokens, max_new_tokens, temperature=temperature, top_k=top_k,
                           stop_token=self.tokenizer.eot if stop_at_eos else None, generator=generator)
        as_text = return_type == "str" or (return_type == "input" and isinstance(input, (str, list)))
        if not as_text:
            return out
        texts = self.to_string(out)
        return texts[0] if isinstance(input, str) else texts
