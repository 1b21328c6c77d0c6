"""Hugging Face causal-LM wrapper around prism-lm's model (written by ``prism export hf``).

The model itself is not re-implemented here: ``prism_transformer.py`` and its neighbours are
prism-lm's own model files, copied into this folder by the export with their imports made relative,
so this folder loads with ``transformers`` alone (no prism-lm install needed). HF's KV cache
(``DynamicCache``) is passed to the model through a per-layer adapter. A padded batch (left or
right, ``attention_mask`` 0 at padding) takes its positions from the mask (each row counts its own
real tokens) and its padded keys out of every attention map, so each row computes what it computes
alone; the logits at padded positions mean nothing.
"""

from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_prism import PrismConfig
from .prism_loss import lm_cross_entropy
from .prism_model_config import ModelConfig
from .prism_transformer import PrismLM


class _LayerCache:
    """One layer of an HF DynamicCache behind prism-lm's cache interface."""

    static = False

    def __init__(self, cache: DynamicCache, layer: int, length: int):
        self.cache, self.layer, self.length = cache, layer, length

    def update(self, k, v, positions):
        k, v = self.cache.update(k, v, self.layer)
        return k, v, None


class PrismForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = PrismConfig
    base_model_prefix = "model"
    _tied_weights_keys = {"model.lm_head.weight": "model.wte.weight"}
    _supports_cache_class = True

    def __init__(self, config: PrismConfig):
        super().__init__(config)
        self.model = PrismLM(ModelConfig.from_json(config.prism))
        self.post_init()

    def _init_weights(self, module):
        """Weights come from the checkpoint; derived buffers that it does not hold are recomputed."""
        if hasattr(module, "reset_buffers"):
            module.reset_buffers()

    def get_input_embeddings(self):
        return self.model.wte

    def get_output_embeddings(self):
        return self.model.lm_head

    def forward(self, input_ids, attention_mask=None, cache=None, past_key_values=None, use_cache=None, labels=None,
                output_attentions=None, output_hidden_states=None, **kwargs):
        """HF's causal-LM forward. The KV cache arrives as ``cache`` (transformers 5) or ``past_key_values``
        (transformers 4) and goes back in the same field. ``output_attentions``: each layer's attention
        probabilities (batch, maps, query, key), signal heads then noise heads for PRISM;
        ``output_hidden_states``: the embeddings, each block's output, and the last after the final
        LayerNorm (GPT-2's convention)."""
        use_cache = self.config.use_cache if use_cache is None else use_cache
        cache = cache if cache is not None else past_key_values
        caches = None
        if use_cache:
            if cache is None:
                cache = DynamicCache()
            length = cache.get_seq_length()
            caches = [_LayerCache(cache, i, length) for i in range(len(self.model.blocks))]
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (self.config.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        states, handles = [], []
        if output_hidden_states:
            handles.append(self.model.blocks[0].register_forward_pre_hook(lambda m, args: states.append(args[0])))
            handles += [b.register_forward_hook(lambda m, args, out: states.append(out[0])) for b in self.model.blocks]
        key_mask = positions = None
        if attention_mask is not None and not bool(attention_mask.all()):  # a padded batch
            key_mask = attention_mask.bool()
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -input_ids.size(1):]
        try:
            hidden, maps = self.model.hidden_states(input_ids, caches, need_weights=bool(output_attentions),
                                                    positions=positions, key_mask=key_mask)
        finally:
            for h in handles:
                h.remove()
        logits = self.model.lm_head(hidden)
        loss = None
        if labels is not None:  # HF convention: labels are the inputs, shifted here
            loss = lm_cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index=-100)
        extra = {}
        if output_hidden_states:
            extra["hidden_states"] = (*states[:-1], hidden)
        if output_attentions:
            extra["attentions"] = tuple(maps)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **extra, **{_CACHE_FIELD: cache if use_cache else None})


_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
