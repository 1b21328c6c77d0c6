"""The two number types every number a user gives goes through: a finite float and a bounded integer.

Every option of the ``prism`` command (``FiniteFloat``, ``BoundedInt`` as argparse types), every
evaluation-time ``--set`` (``checkpoint/model.py``) and every config value read from TOML or ``--set``
(``config.py: from_dict``) is checked here, so a NaN, an infinity or a size no machine can hold is
refused in one line naming the option, before anything is allocated. The bounds on sizes are stated
once, below, with what they protect.
"""

from __future__ import annotations

import argparse
import math

from prism_lm.errors import PrismError

INT64 = 2**63  # seeds and counts: what torch and numpy hold in a signed 64-bit integer
# positions one window may hold at evaluation (RoPE tables and attention scores grow with it; the
# paper trains at 512): beyond this a request would ask for tens of GB before failing
MAX_POSITIONS = 2**16
MAX_NEW_TOKENS = 100_000  # tokens one sample may ask for: more is a typo, not a sample (it would run for hours)


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    def end(x: float) -> str:
        if x == INT64:
            return "2^63"
        return f"{x:,}" if isinstance(x, int) else f"{x:g}"

    return f"{'(' if low_open else '['}{end(low)}, {end(high)}{')' if high_open else ']'}"


def finite_float(value, name: str, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
                 high_open: bool = False) -> float:
    """``value`` as a float; a one-line PrismError naming ``name`` unless it is a finite number in the
    interval (``low_open``/``high_open``: the end itself excluded)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PrismError(f"{name} must be a number, got {value!r}")
    value = float(value)
    inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not (math.isfinite(value) and inside):
        if math.isinf(high):
            where = "" if math.isinf(low) else f" {'>' if low_open else '>='} {low:g}"
        else:
            where = f" in {_interval(low, high, low_open, high_open)}"
        raise PrismError(f"{name} must be a finite number{where}, got {value!r}")
    return value


def bounded_int(value, name: str, low: int = 0, high: int = INT64, high_open: bool = True) -> int:
    """``value`` as an int; a one-line PrismError naming ``name`` unless it is an integer in [low, high)
    ([low, high] with ``high_open=False``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PrismError(f"{name} must be an integer, got {value!r}")
    if not (low <= value and (value < high if high_open else value <= high)):
        raise PrismError(f"{name} must be an integer in {_interval(low, high, False, high_open)}, got {value:,}")
    return value


class _BoundedType:
    """An argparse type: text parsed (``parse``), then checked (``check``) against the bounds given;
    argparse puts the option's name before the message."""

    parse = staticmethod(float)
    check = staticmethod(finite_float)
    __name__ = "number"  # argparse names the type in its messages

    def __init__(self, **bounds):
        self.bounds = bounds

    def __call__(self, text: str):
        try:
            value = self.parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an' if self.__name__[0] in 'aeiou' else 'a'} "
                                             f"{self.__name__}") from None
        try:
            return self.check(value, "it", **self.bounds)
        except PrismError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("it ")) from None


class FiniteFloat(_BoundedType):
    """A finite float within bounds (see ``finite_float``)."""

    def __init__(self, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
                 high_open: bool = False):
        super().__init__(low=low, high=high, low_open=low_open, high_open=high_open)


class BoundedInt(_BoundedType):
    """An integer within bounds (see ``bounded_int``)."""

    parse = staticmethod(int)
    check = staticmethod(bounded_int)
    __name__ = "integer"

    def __init__(self, low: int = 0, high: int = INT64, high_open: bool = True):
        super().__init__(low=low, high=high, high_open=high_open)
