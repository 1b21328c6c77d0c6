"""The one exception type users see: a one-line message naming the problem.

The CLI prints ``error: <message>`` and exits with status 2 for any PrismError;
everything else is a bug and keeps its traceback.
"""


class PrismError(Exception):
    """Bad input from the user (file, config, checkpoint, data), not a bug."""
