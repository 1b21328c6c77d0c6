"""Loads the task's items from beside this file, so `--include_path benchmarks/lm_eval` works from
any working directory (a relative data_files path is read against the current one)."""

from pathlib import Path

ITEMS = Path(__file__).resolve().with_name("prism_recall.jsonl")


def load_recall(**_):
    import datasets

    return datasets.DatasetDict({"test": datasets.load_dataset("json", data_files=str(ITEMS), split="train")})
