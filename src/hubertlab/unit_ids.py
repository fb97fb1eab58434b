"""Unit ids as read from a file: integers in [0, num_units), checked where they are read.

A negative id is the ignore index of a cross-entropy loss (a run on -1 everywhere trains at
loss 0.0), a float is cut to an integer by numpy and a string is parsed: each would give a
plausible training run on labels that match nothing, so they are refused naming the file and
line (or shard and key)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Stored as int32 (units.jsonl readers, tar shards): larger ids cannot be held.
MAX_UNIT_ID = np.iinfo(np.int32).max


def unit_ids(values: object, where: str, num_units: int | None = None) -> np.ndarray:
    """`values` (a JSON list) as int32 unit ids; ValueError naming `where` and the first bad
    value unless every one is an integer with 0 <= id < num_units (num_units None: any k)."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(f"{where}: units must be a list of integers, got {type(values).__name__}")
    if not values:
        return np.zeros(0, np.int32)
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        bad = next((v for v in values if type(v) is not int), None)
        if bad is None:  # integers too large for numpy
            raise ValueError(f"{where}: a unit id does not fit int32")
        raise ValueError(f"{where}: unit {bad!r} is not an integer id (ids are 0 <= id < k)")
    return check_range(arr, where, num_units)


def check_range(arr: np.ndarray, where: str, num_units: int | None = None) -> np.ndarray:
    """Integer array `arr` as int32 after checking 0 <= id < num_units (ValueError naming
    `where`, the bad id and its position)."""
    if not arr.size:
        return arr.astype(np.int32)
    low, high = int(arr.min()), int(arr.max())
    if low < 0:
        pos = int(np.argmax(arr == low))
        raise ValueError(f"{where}: unit {low} at position {pos} is negative (ids are 0 <= id < k)")
    limit = MAX_UNIT_ID if num_units is None else num_units
    if high >= limit:
        pos = int(np.argmax(arr == high))
        bound = "does not fit int32" if num_units is None else f"is not below k = {num_units}"
        raise ValueError(f"{where}: unit {high} at position {pos} {bound}")
    return arr.astype(np.int32)


def parse_km_line(line: str, where: str, num_units: int | None = None) -> np.ndarray:
    """The ids of one line of a fairseq .km file (space-separated integers)."""
    ids = []
    for token in line.split():
        try:
            ids.append(int(token, 10))
        except ValueError:
            raise ValueError(f"{where}: unit {token!r} is not an integer id") from None
    if ids and not (-(2**63) <= min(ids) and max(ids) < 2**63):
        raise ValueError(f"{where}: a unit id does not fit int32")
    return check_range(np.array(ids, dtype=np.int64), where, num_units)


def recorded_num_units(meta: dict | None) -> int | None:
    """The k a units folder records (units.json "k"), None when absent or not an int."""
    k = (meta or {}).get("k")
    return k if type(k) is int and k > 0 else None
