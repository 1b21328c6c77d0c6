"""Hugging Face configuration of a prism-lm model (written by ``prism export hf``).

``prism`` holds prism-lm's ModelConfig as a dict; the standard fields (vocab_size, hidden_size, ...)
mirror it for tools that read them.
"""

from transformers import PretrainedConfig


class PrismConfig(PretrainedConfig):
    model_type = "prism_lm"

    def __init__(self, prism: dict | None = None, use_cache: bool = True, **kwargs):
        self.prism = dict(prism or {})
        self.use_cache = use_cache
        kwargs.setdefault("tie_word_embeddings", True)
        super().__init__(**kwargs)
