"""hubertlab.numbers: the one range check behind checked_float (files, curation) and the
argparse types ranged_float / ranged_int."""

import argparse
import math

import pytest

from hubertlab.commands.args import ranged_float, ranged_int
from hubertlab.numbers import checked_float, checked_int


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "nan", "inf", -0.1, 1.0, "x"])
def test_checked_float_refuses_non_finite_and_out_of_range(bad):
    with pytest.raises(ValueError, match=r"^--share must be a"):
        checked_float(bad, "--share", low=0, high=1, high_open=True)


def test_checked_float_parses_text_and_keeps_closed_ends():
    assert checked_float("0.25", "--x", low=0, high=1) == 0.25
    assert checked_float(0, "--x", low=0) == 0.0
    with pytest.raises(ValueError, match=r"--x must be a finite number in \(0, inf\], got 0"):
        checked_float(0, "--x", low=0, low_open=True)
    with pytest.raises(ValueError, match=r"f.csv:3: hours must be a finite number in \[0, inf\]"):
        checked_float(math.nan, "f.csv:3: hours", low=0)


def test_ranged_float_is_checked_float_as_an_argparse_type():
    parse = ranged_float(low=0, high=1, high_open=True)
    for bad in ("1", "nan", "x"):
        with pytest.raises(ValueError) as core:
            checked_float(bad, "", low=0, high=1, high_open=True)
        with pytest.raises(argparse.ArgumentTypeError) as wrapped:
            parse(bad)
        assert str(wrapped.value) == str(core.value) and repr(bad) in str(wrapped.value)


def test_checked_int():
    assert checked_int("3", "--k", low=2) == 3
    for bad in ("1", "1.5", True):
        with pytest.raises(ValueError, match="--k "):
            checked_int(bad, "--k", low=2)
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be in \[2, 4\]"):
        ranged_int(low=2, high=4)("5")
