"""Argument types shared by the subcommands: numbers checked (finite, in range) when the
command line is parsed, so a bad flag stops the command before any work, naming the flag.

    p.add_argument("--min-gap", type=ranged_float(low=0), default=0.1)
    p.add_argument("--overlap", type=ranged_float(low=0, high=1, high_open=True))

`float("nan")` passes every comparison-based range check (nan < 0 and nan >= 0 are both
false), and "inf" parses as a float: both are refused here."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _bounds(low, high, low_open: bool, high_open: bool) -> str:
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{left}{lo}, {hi}{right}"


def _in_range(value, low, high, low_open: bool, high_open: bool) -> bool:
    if low is not None and (value < low or (low_open and value == low)):
        return False
    return high is None or not (value > high or (high_open and value == high))


def ranged_float(
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], float]:
    """An argparse `type`: a finite float in [low, high] (an end None: unbounded; *_open:
    that end excluded). argparse reports a refusal as `argument --flag: ...` (exit 2)."""
    where = _bounds(low, high, low_open, high_open)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if not _in_range(value, low, high, low_open, high_open):
            raise argparse.ArgumentTypeError(f"must be in {where}, got {text!r}")
        return value

    parse.__name__ = "float"  # argparse names the type in some messages
    return parse


def ranged_int(*, low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: an integer in [low, high] (an end None: unbounded)."""
    where = _bounds(low, high, False, False)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not _in_range(value, low, high, False, False):
            raise argparse.ArgumentTypeError(f"must be in {where}, got {text!r}")
        return value

    parse.__name__ = "int"
    return parse
