"""BabyHuBERT's segment policy: VAD segments in, training segments out (REFERENCE.md 7.2).

Steps, in order, all in seconds:
1. merge segments that overlap or are less than `merge_gap_s` apart (the silences merged in
   are remembered as the segment's inner gaps);
2. pad segments shorter than `min_s` symmetrically to `min_s`. At the file's start the pad is
   clamped at 0 and the rest goes to the end; at the file's end (this needs the duration) it
   is clamped at the duration and the rest goes to the start. A file shorter than `min_s`
   gives one segment covering it, which step 5 drops;
3. merge again: padded segments may now overlap or come closer than `merge_gap_s`;
4. split segments longer than `max_s` at their longest inner gap, recursively, keeping the
   silence out; only gaps that leave `min_s` on both sides count, so no speech is cut off
   and dropped; with no such gap, split at the middle;
5. drop what is still shorter than `min_s`.

Unlike the public script (which compares `<= 2 s` after padding to 2 s and so drops every
padded segment), padded segments are kept: comparisons allow 1 microsecond of float error."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hubertlab.constants import SAMPLE_RATE
from hubertlab.curate.select import join_rows
from hubertlab.curate.speech import FileSpeech
from hubertlab.data.manifest import Manifest, ManifestRow

_EPS = 1e-6


@dataclass(frozen=True)
class SegmentPolicy:
    merge_gap_s: float = 2.0
    """Segments closer than this (or overlapping) become one."""
    min_s: float = 2.0
    """Shorter segments are padded to this length; what stays shorter is dropped."""
    max_s: float = 30.0
    """Longer segments are split."""

    def __post_init__(self) -> None:
        for name in ("merge_gap_s", "min_s", "max_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.max_s < 2 * self.min_s:
            raise ValueError(f"max_s ({self.max_s}) must be at least 2 x min_s ({self.min_s})")


@dataclass(frozen=True)
class _Segment:
    start: float
    end: float
    gaps: tuple[tuple[float, float], ...] = ()  # silences merged in

    @property
    def length(self) -> float:
        return self.end - self.start


def _merge(segments: list[_Segment], merge_gap_s: float) -> list[_Segment]:
    out: list[_Segment] = []
    for seg in sorted(segments, key=lambda s: (s.start, s.end)):
        if out and seg.start - out[-1].end < merge_gap_s - _EPS:
            last = out[-1]
            gap = ((last.end, seg.start),) if seg.start > last.end else ()
            out[-1] = _Segment(last.start, max(last.end, seg.end), last.gaps + gap + seg.gaps)
        else:
            out.append(seg)
    return out


def _pad(seg: _Segment, min_s: float, duration_s: float) -> _Segment:
    if seg.length >= min_s - _EPS:
        return seg
    half = (min_s - seg.length) / 2
    start, end = seg.start - half, seg.end + half
    if start < 0:
        start, end = 0.0, end - start
    if end > duration_s:
        start, end = max(0.0, start - (end - duration_s)), duration_s
    return _Segment(start, end, seg.gaps)


def _split(seg: _Segment, policy: SegmentPolicy) -> list[_Segment]:
    if seg.length <= policy.max_s + _EPS:
        return [seg]
    usable = [
        g for g in seg.gaps
        if g[0] - seg.start >= policy.min_s - _EPS and seg.end - g[1] >= policy.min_s - _EPS
    ]  # fmt: skip
    if usable:
        cut_start, cut_end = max(usable, key=lambda g: (g[1] - g[0], -g[0]))
    else:
        cut_start = cut_end = (seg.start + seg.end) / 2
    left = _Segment(seg.start, cut_start, tuple(g for g in seg.gaps if g[1] <= cut_start))
    right = _Segment(cut_end, seg.end, tuple(g for g in seg.gaps if g[0] >= cut_end))
    return _split(left, policy) + _split(right, policy)


def apply_policy(
    segments: list[tuple[float, float]], duration_s: float, policy: SegmentPolicy = SegmentPolicy()
) -> list[tuple[float, float]]:
    """Training segments (start, end) in seconds from speech segments of a recording of
    `duration_s` seconds (see the module docstring for the steps and edge cases)."""
    if duration_s <= 0:
        return []
    clipped = [
        _Segment(max(0.0, s), min(duration_s, e)) for s, e in segments if min(duration_s, e) > s
    ]
    merged = _merge(clipped, policy.merge_gap_s)
    padded = _merge([_pad(s, policy.min_s, duration_s) for s in merged], policy.merge_gap_s)
    pieces = [p for s in padded for p in _split(s, policy)]
    return [(p.start, p.end) for p in pieces if p.length >= policy.min_s - _EPS]


def segment_rows(row: ManifestRow, segments: list[tuple[float, float]]) -> list[ManifestRow]:
    """Span rows of `row`'s recording, one per segment, with fileids `<fileid>_<start>_<end>`
    (samples at 16 kHz; BabyHuBERT's naming). A span of a span row is offset by its start."""
    base = row.start or 0
    out = []
    for start_s, end_s in segments:
        start = round(start_s * SAMPLE_RATE)
        end = min(round(end_s * SAMPLE_RATE), row.num_samples)
        if end <= start:
            continue
        out.append(
            ManifestRow(
                fileid=f"{row.fileid}_{start}_{end}",
                path=row.path,
                num_samples=end - start,
                archive=row.archive,
                byte_offset=row.byte_offset,
                byte_size=row.byte_size,
                start=base + start,
            )  # fmt: skip
        )
    return out


def policy_spans(
    speech: list[FileSpeech], manifest: Manifest, policy: SegmentPolicy, source: str = ""
) -> list[ManifestRow]:
    """Span rows of every recording of `manifest` from its VAD result in `speech` (`source`
    names where the speech came from, for errors): what `hubertlab segments` writes."""
    rows = []
    for found, row in join_rows(speech, manifest, source):
        duration_s = row.num_samples / SAMPLE_RATE
        rows += segment_rows(row, apply_policy(list(found.segments), duration_s, policy))
    return rows
