"""The one exception type users see: a one-line message naming the problem; and warnings.

The CLI prints ``error: <message>`` and exits with status 2 for any PrismError;
everything else is a bug and keeps its traceback. ``warn`` prints ``warning: <message>`` on
stderr for what prism-lm did instead of failing (a skipped checkpoint, a taken-over lock).
"""

import sys


class PrismError(Exception):
    """Bad input from the user (file, config, checkpoint, data), not a bug."""


class DivergedError(PrismError):
    """Training stopped on a non-finite loss (a result in a sweep, a failure anywhere else)."""


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
