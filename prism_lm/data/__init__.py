"""Data: offline GPT-2 tokenizer, text sources, the embedded story corpus, shards and loaders."""
