"""Argument types shared by the subcommands: numbers checked (finite, in range) when the
command line is parsed, so a bad flag stops the command before any work, naming the flag.

    p.add_argument("--min-gap", type=ranged_float(low=0), default=0.1)
    p.add_argument("--overlap", type=ranged_float(low=0, high=1, high_open=True))

They are argparse wrappers over `hubertlab.numbers` (the one range check, which curation and
file readers call directly): its ValueError becomes argparse's `argument --flag: ...` (exit 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from hubertlab.numbers import checked_float, checked_int


def ranged_float(
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], float]:
    """An argparse `type`: a finite float in [low, high] (an end None: unbounded; *_open:
    that end excluded). argparse reports a refusal as `argument --flag: ...` (exit 2)."""

    def parse(text: str) -> float:
        try:
            return checked_float(text, "", low=low, high=high, low_open=low_open,
                                 high_open=high_open)  # fmt: skip
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = "float"  # argparse names the type in some messages
    return parse


def ranged_int(*, low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: an integer in [low, high] (an end None: unbounded)."""

    def parse(text: str) -> int:
        try:
            return checked_int(text, "", low=low, high=high)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = "int"
    return parse
