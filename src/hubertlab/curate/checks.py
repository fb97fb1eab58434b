"""Range checks for the floats that curation reads from flags and files: NaN passes every
comparison (`nan < 0` is false) and inf every lower bound, so each value is checked to be
finite and in range before any work, and the error names the flag, or the file and line."""

from __future__ import annotations

import math


def checked_float(
    value: float, name: str, *, low: float = -math.inf, high: float = math.inf,
    low_open: bool = False,
) -> float:  # fmt: skip
    """`value` if it is a finite number in [low, high] ((low, high] with `low_open`); else
    ValueError naming `name` (a flag such as "--hours", or "file:line: column")."""
    above = value > low if low_open else value >= low
    if not (math.isfinite(value) and above and value <= high):
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number in {bounds}, got {value}")
    return float(value)
