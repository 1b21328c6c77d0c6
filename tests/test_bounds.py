"""The two number types every user-given number goes through (prism_lm/bounds.py), on hand values."""

import argparse
import math

import pytest

from prism_lm.bounds import INT64, BoundedInt, FiniteFloat, bounded_int, finite_float
from prism_lm.errors import PrismError


@pytest.mark.parametrize("value,kwargs,message", [
    (math.nan, {}, "x must be a finite number, got nan"),
    (math.inf, {}, "x must be a finite number, got inf"),
    (-math.inf, {"low": 0.0}, "x must be a finite number >= 0, got -inf"),
    (-0.5, {"low": 0.0}, "x must be a finite number >= 0, got -0.5"),
    (0.0, {"low": 0.0, "low_open": True}, "x must be a finite number > 0, got 0.0"),
    (1.0, {"low": 0.0, "high": 1.0, "high_open": True}, "x must be a finite number in [0, 1), got 1.0"),
    ("1", {}, "x must be a number, got '1'"),
    (True, {}, "x must be a number, got True"),
])
def test_finite_float_refuses_with_the_interval_it_wanted(value, kwargs, message):
    with pytest.raises(PrismError) as info:
        finite_float(value, "x", **kwargs)
    assert str(info.value) == message


def test_finite_float_and_bounded_int_keep_what_is_inside():
    assert finite_float(1, "x") == 1.0 and isinstance(finite_float(1, "x"), float)
    assert finite_float(0.5, "x", 0.0, 1.0, high_open=True) == 0.5
    assert bounded_int(INT64 - 1, "x") == INT64 - 1 and bounded_int(-INT64, "x", -INT64) == -INT64
    assert bounded_int(65536, "x", 1, 65536, high_open=False) == 65536


@pytest.mark.parametrize("value,kwargs,message", [
    (INT64, {}, "x must be an integer in [0, 2^63), got 9,223,372,036,854,775,808"),
    (-1, {}, "x must be an integer in [0, 2^63), got -1"),
    (65537, {"low": 1, "high": 65536, "high_open": False}, "x must be an integer in [1, 65,536], got 65,537"),
    (1.0, {}, "x must be an integer, got 1.0"),
    (False, {}, "x must be an integer, got False"),
])
def test_bounded_int_refuses_with_the_interval_it_wanted(value, kwargs, message):
    with pytest.raises(PrismError) as info:
        bounded_int(value, "x", **kwargs)
    assert str(info.value) == message


def test_the_argparse_types_parse_text_and_say_what_they_wanted():
    assert FiniteFloat(0.0)("0.8") == 0.8 and BoundedInt(1)("12") == 12
    for text, message in (("nan", "must be a finite number >= 0, got nan"), ("abc", "'abc' is not a number"),
                          ("1e400", "must be a finite number >= 0, got inf")):
        with pytest.raises(argparse.ArgumentTypeError, match=message.replace("(", r"\(").replace("[", r"\[")):
            FiniteFloat(0.0)(text)
    for text, message in (("1.5", "'1.5' is not an integer"), (str(10**20), "must be an integer in [1, 2^63)")):
        with pytest.raises(argparse.ArgumentTypeError) as info:
            BoundedInt(1)(text)
        assert message in str(info.value)
