"""The one range check for numbers read from flags and files: NaN passes every comparison
(`nan < 0` and `nan >= 0` are both false) and inf every lower bound, so each value is checked
to be finite and in range before any work, and the error names the flag, or the file and line.

    checked_float(hours, f"{path}:{line}: hours", low=0)      # ValueError naming file:line
    checked_float("nan", "--min-gap", low=0)                 # text is parsed first

`hubertlab.commands.args.ranged_float` wraps it as an argparse type."""

from __future__ import annotations

import math


def bounds_text(low=None, high=None, low_open: bool = False, high_open: bool = False) -> str:
    """The interval as text, e.g. "[0, 1)"; an end None is written -inf / inf."""
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"


def in_range(value, low=None, high=None, low_open: bool = False, high_open: bool = False) -> bool:
    """True if `value` lies in the interval (an end None: unbounded). NaN lies in none."""
    if value != value:
        return False
    if low is not None and (value < low or (low_open and value == low)):
        return False
    return high is None or not (value > high or (high_open and value == high))


def _named(name: str, message: str) -> str:
    return f"{name} {message}" if name else message


def checked_float(
    value: float | str, name: str, *, low: float | None = None, high: float | None = None,
    low_open: bool = False, high_open: bool = False,
) -> float:  # fmt: skip
    """`value` (a number, or text to parse) as a float if it is finite and in [low, high]
    (an end None: unbounded; *_open: that end excluded); else ValueError naming `name` (a flag
    such as "--hours", or "file:line: column"; "" for none)."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ValueError(_named(name, f"must be a number, got {value!r}")) from None
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise ValueError(_named(name, f"must be a number, got {value!r}"))
    low = None if low is not None and low == -math.inf else low
    high = None if high is not None and high == math.inf else high
    if not (math.isfinite(number) and in_range(number, low, high, low_open, high_open)):
        unbounded = low is None and high is None
        where = "" if unbounded else " in " + bounds_text(low, high, low_open, high_open)
        raise ValueError(_named(name, f"must be a finite number{where}, got {value!r}"))
    return float(number)


def checked_int(
    value: int | str, name: str, *, low: int | None = None, high: int | None = None
) -> int:
    """`value` (an integer, or text to parse) if it lies in [low, high] (an end None:
    unbounded); else ValueError naming `name`."""
    number = value
    if isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            raise ValueError(_named(name, f"expected an integer, got {value!r}")) from None
    if isinstance(number, bool) or not isinstance(number, int):
        raise ValueError(_named(name, f"expected an integer, got {value!r}"))
    if not in_range(number, low, high):
        raise ValueError(_named(name, f"must be in {bounds_text(low, high)}, got {value!r}"))
    return number
