"""Phone alignments: phones.jsonl (phone segments per file) and ZeroSpeech/Libri-Light ABX item
files. Readers check the input and name the file and line of anything malformed.

phones.jsonl: one JSON object per line, {"fileid", "speaker", "language", "phones":
[[onset_s, offset_s, phone], ...]}, segments in time order covering the whole file, pauses "SIL".
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hubertlab.constants import FRAME_HOP, RECEPTIVE_FIELD, SAMPLE_RATE
from hubertlab.fileio import atomic_open, read_jsonl

SIL = "SIL"
Segment = tuple[float, float, str]  # (onset_s, offset_s, phone)

ITEM_HEADER = "#file onset offset #phone prev-phone next-phone speaker"
# Frame k of the HuBERT CNN sees samples [320k, 320k + 400): its center is 200 samples later.
FRAME_HOP_S = FRAME_HOP / SAMPLE_RATE  # 0.02
FRAME_OFFSET_S = RECEPTIVE_FIELD / 2 / SAMPLE_RATE  # 0.0125


class AlignmentError(ValueError):
    """A phones.jsonl or item file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class PhoneRecord:
    """One line of phones.jsonl."""

    fileid: str
    speaker: str
    language: str
    segments: tuple[Segment, ...]


class AbxItem(NamedTuple):
    """One row of an ABX item file: a phone token with its context and speaker.

    A named tuple rather than a dataclass: item files have 10^5-10^6 rows, and tuples are
    built and compared several times faster."""

    fileid: str
    onset_s: float
    offset_s: float
    phone: str
    prev_phone: str
    next_phone: str
    speaker: str


def _segments(value: object, where: str) -> tuple[Segment, ...]:
    if not isinstance(value, list) or not value:
        raise AlignmentError(
            f"{where}: 'phones' must be a non-empty list of [onset, offset, phone]"
        )
    segments: list[Segment] = []
    previous_offset = -math.inf
    for i, seg in enumerate(value):
        ok = isinstance(seg, list) and len(seg) == 3 and isinstance(seg[2], str) and seg[2]
        ok = ok and all(isinstance(t, int | float) and math.isfinite(t) for t in seg[:2])
        if not ok:
            raise AlignmentError(f"{where}: segment {i} is not [onset_s, offset_s, phone]: {seg!r}")
        onset, offset, phone = float(seg[0]), float(seg[1]), seg[2]
        if not 0 <= onset < offset:
            raise AlignmentError(f"{where}: segment {i} {seg!r} needs 0 <= onset < offset")
        if onset < previous_offset - 1e-6:
            raise AlignmentError(f"{where}: segment {i} {seg!r} starts before the previous ends")
        if any(c.isspace() for c in phone):
            raise AlignmentError(f"{where}: segment {i}: phone {phone!r} contains whitespace")
        segments.append((onset, offset, phone))
        previous_offset = offset
    return tuple(segments)


def read_phone_records(path: str | Path) -> dict[str, PhoneRecord]:
    """All records of a phones.jsonl file, by fileid, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"phone alignments not found: {path}")
    records: dict[str, PhoneRecord] = {}
    for where, d in read_jsonl(path, error=AlignmentError):
        if not isinstance(d.get("fileid"), str) or not d["fileid"]:
            raise AlignmentError(f"{where}: expected an object with a 'fileid' string")
        fileid = d["fileid"]
        if fileid in records:
            raise AlignmentError(f"{where}: fileid {fileid!r} appears twice")
        records[fileid] = PhoneRecord(
            fileid=fileid,
            speaker=str(d.get("speaker", "")),
            language=str(d.get("language", "")),
            segments=_segments(d.get("phones"), where),
        )
    return records


def read_phone_segments(path: str | Path) -> dict[str, list[Segment]]:
    """fileid -> [(onset_s, offset_s, phone), ...] from a phones.jsonl file."""
    return {k: list(r.segments) for k, r in read_phone_records(path).items()}


def write_phone_records(records: Iterable[PhoneRecord], path: str | Path) -> None:
    """Write phones.jsonl atomically (times rounded to 0.1 ms)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for r in records:
            phones = [[round(a, 5), round(b, 5), p] for a, b, p in r.segments]
            d = {"fileid": r.fileid, "speaker": r.speaker, "language": r.language}
            f.write(json.dumps({**d, "phones": phones}, ensure_ascii=False) + "\n")


def frame_phone_labels(
    segments: Sequence[Segment],
    num_frames: int,
    *,
    frame_hop_s: float = FRAME_HOP_S,
    frame_offset_s: float = FRAME_OFFSET_S,
    fill: str = SIL,
) -> list[str]:
    """The phone under the center of each frame: frame k is centred at
    k * frame_hop_s + frame_offset_s seconds. The defaults match the HuBERT CNN (400-sample
    window, 320-sample hop at 16 kHz: centre = 0.02 k + 0.0125 s); for 10 ms MFCC frames use
    frame_hop_s=0.01. Frames whose centre lies in no segment (a gap, past the end) get `fill`."""
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if frame_hop_s <= 0:
        raise ValueError(f"frame_hop_s must be > 0, got {frame_hop_s}")
    labels = [fill] * num_frames
    if not segments or num_frames == 0:
        return labels
    onsets = np.array([s[0] for s in segments])
    offsets = np.array([s[1] for s in segments])
    centers = np.arange(num_frames) * frame_hop_s + frame_offset_s
    index = np.searchsorted(onsets, centers, side="right") - 1  # last segment starting <= c
    for k, i in enumerate(index):
        if i >= 0 and centers[k] < offsets[i]:
            labels[k] = segments[i][2]
    return labels


def abx_items(segments: Sequence[Segment], fileid: str, speaker: str) -> list[AbxItem]:
    """Item rows for one file, Libri-Light style: every phone whose previous and next phones
    in the sequence are both real phones (so never SIL, nor a file's first or last phone)."""
    items = []
    for i in range(1, len(segments) - 1):
        onset, offset, phone = segments[i]
        prev_phone, next_phone = segments[i - 1][2], segments[i + 1][2]
        if SIL in (phone, prev_phone, next_phone):
            continue
        items.append(AbxItem(fileid, onset, offset, phone, prev_phone, next_phone, speaker))
    return items


def write_item_file(items: Iterable[AbxItem], path: str | Path) -> None:
    """Write a ZeroSpeech item file atomically (times in seconds, 4 decimals)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(ITEM_HEADER + "\n")
        for it in items:
            f.write(
                f"{it.fileid} {it.onset_s:.4f} {it.offset_s:.4f} {it.phone} "
                f"{it.prev_phone} {it.next_phone} {it.speaker}\n"
            )


def read_item_file(path: str | Path) -> list[AbxItem]:
    """Rows of a ZeroSpeech item file (`#file onset offset #phone prev-phone next-phone
    speaker`), checking the header, the column count and the times. A token listed twice
    (same file, onset and offset) is an error: it would count twice in every score."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"item file not found: {path}")
    items = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().split()
        if header != ITEM_HEADER.split():
            raise AlignmentError(f"{path}:1: expected header {ITEM_HEADER!r}, got {header!r}")
        for line_no, line in enumerate(f, start=2):
            cols = line.split()
            if not cols:
                continue
            if len(cols) != 7:
                raise AlignmentError(f"{path}:{line_no}: expected 7 columns, got {len(cols)}")
            try:
                onset, offset = float(cols[1]), float(cols[2])
            except ValueError:
                raise AlignmentError(f"{path}:{line_no}: onset/offset are not numbers") from None
            if not (0 <= onset < offset and math.isfinite(offset)):
                raise AlignmentError(f"{path}:{line_no}: needs 0 <= onset < offset: {line!r}")
            items.append(AbxItem(cols[0], onset, offset, cols[3], cols[4], cols[5], cols[6]))
    _check_unique_tokens(items, path)
    return items


def _check_unique_tokens(items: Sequence[AbxItem], path: Path) -> None:
    """Refuse a token (file, onset, offset) listed twice. One set of all keys first (item
    files have up to millions of rows); the lines are looked up only when there is a repeat."""
    span_of = operator.itemgetter(0, 1, 2)  # (fileid, onset_s, offset_s)
    if len(set(map(span_of, items))) == len(items):
        return
    first: dict[tuple, int] = {}
    for row, span in enumerate(map(span_of, items)):
        seen = first.setdefault(span, row)
        if seen != row:
            # Line numbers: header is line 1; blank lines are not kept, so count them again.
            lines = _item_line_numbers(path)
            token = f"{span[0]} {items[row].onset_s:g} {items[row].offset_s:g}"
            raise AlignmentError(f"{path}:{lines[row]}: token {token} repeats line {lines[seen]}")


def _item_line_numbers(path: Path) -> list[int]:
    """The line number of each item row of `path` (blank lines skipped, as read_item_file)."""
    with open(path, encoding="utf-8") as f:
        return [n for n, line in enumerate(f, start=1) if n > 1 and line.split()]
