"""Exports of prism-lm checkpoints to other ecosystems (Hugging Face ``transformers``)."""
