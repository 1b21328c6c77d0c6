"""Checkpoints without pickle: model weights + config (``model``), the training state that makes
resume exact (``training``), and the import of official PRISM checkpoints (``official``)."""

from prism_lm.checkpoint.model import (
    load_codec,
    load_model,
    load_state,
    model_state,
    read_model_config,
    resolve_checkpoint_dir,
    save_model,
)
from prism_lm.checkpoint.official import import_official

__all__ = ["import_official", "load_codec", "load_model", "load_state", "model_state", "read_model_config",
           "resolve_checkpoint_dir", "save_model"]
