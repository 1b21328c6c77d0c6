"""The two file rules every writer and reader of prism-lm follows.

- A directory that prism-lm writes (a checkpoint, a prepared data set) is complete or absent: it is
  built under a temporary sibling name and renamed into place, and an existing non-empty directory
  is never overwritten (``atomic_directory``).
- Every JSON file carries a ``format`` tag; reading one checks the tag and turns a missing,
  unreadable or foreign file into a one-line ``PrismError`` (``read_tagged_json``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prism_lm.errors import PrismError


class atomic_directory:  # noqa: N801 (used as a function: ``with atomic_directory(target) as tmp``)
    """Context manager: yields a temporary directory next to ``target``, renamed to it on success."""

    def __init__(self, target: str | Path):
        self.target = Path(target)

    def __enter__(self) -> Path:
        if self.target.exists() and (not self.target.is_dir() or any(self.target.iterdir())):
            raise PrismError(f"refusing to overwrite non-empty {self.target}")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.target.exists():  # an empty directory may stand in the way
            self.target.rmdir()
        os.replace(self.tmp, self.target)


def read_tagged_json(path: Path, fmt: str, what: str, missing: str | None = None) -> dict[str, Any]:
    """The JSON object in ``path`` whose ``format`` is ``fmt``; ``what`` names it in errors.

    ``missing`` replaces the message for an absent file (say, which command makes one).
    """
    path = Path(path)
    if not path.is_file():
        raise PrismError(missing or f"{path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PrismError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise PrismError(f"{path} is not {what} (expected format {fmt!r})")
    return data


def write_json(path: Path, data: dict[str, Any], indent: int | None = 2) -> None:
    path.write_text(json.dumps(data, indent=indent) + "\n", encoding="utf-8")
