"""prism-lm: PRISM, a white-box transformer whose attention comes from MCR², and its baselines.

Three lines to a trained model's logits::

    import prism_lm
    model = prism_lm.load_model("runs/prism/checkpoints/best")
    logits = model(idx).logits  # (B, T, vocab)
"""

from prism_lm.checkpoint import load_codec, load_model, save_model
from prism_lm.config import ModelConfig, TrainConfig
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM, generate

__all__ = ["ModelConfig", "PrismError", "PrismLM", "TrainConfig", "generate", "load_codec", "load_model",
           "save_model"]
__version__ = "0.1.0"
