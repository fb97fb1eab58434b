"""Multi-label frame targets on the HuBERT frame grid: frame k sees samples [320k, 320k + 400).

A class is on in a frame if any of its segments overlaps the frame (segma / VTC 2.x), so
overlapping speakers of different classes give several ones in one frame. Frames outside the
scored regions (UEM) are ignored: a frame counts as scored when its centre lies in a region.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from hubertlab.constants import FRAME_HOP, RECEPTIVE_FIELD, SAMPLE_RATE
from hubertlab.data.rttm import Turn

# Times are turned into samples rounded to 1e-6 sample, so that "0.1 s" is exactly 1600.
_EPS_SAMPLES = 1e-6


def _samples(seconds: float) -> float:
    return round(seconds * SAMPLE_RATE / _EPS_SAMPLES) * _EPS_SAMPLES


def frame_span(onset_s: float, offset_s: float, num_frames: int) -> tuple[int, int]:
    """[first, last + 1) frames whose 400-sample window overlaps [onset_s, offset_s)."""
    start, end = _samples(onset_s), _samples(offset_s)
    if end <= start:
        return 0, 0
    first = max(math.floor((start - RECEPTIVE_FIELD) / FRAME_HOP) + 1, 0)
    last = min(math.ceil(end / FRAME_HOP) - 1, num_frames - 1)
    return first, max(first, last + 1)


def frame_targets(turns: Iterable[Turn], num_frames: int, classes: Sequence[str]) -> np.ndarray:
    """(num_frames, len(classes)) float32 of 0/1; a turn of another label is an error."""
    index = {c: i for i, c in enumerate(classes)}
    targets = np.zeros((num_frames, len(classes)), dtype=np.float32)
    for turn in turns:
        if turn.label not in index:
            raise ValueError(
                f"{turn.fileid}: unknown class {turn.label!r} (known: {', '.join(classes)})"
            )
        first, stop = frame_span(turn.onset_s, turn.offset_s, num_frames)
        targets[first:stop, index[turn.label]] = 1.0
    return targets


def frame_centers_s(num_frames: int) -> np.ndarray:
    """(num_frames,) centre of each frame in seconds: 0.02 k + 0.0125."""
    return (np.arange(num_frames) * FRAME_HOP + RECEPTIVE_FIELD / 2) / SAMPLE_RATE


def ignore_mask(regions: Sequence[tuple[float, float]] | None, num_frames: int) -> np.ndarray:
    """(num_frames,) bool, True where a frame is not scored; None (no UEM) scores everything."""
    if regions is None:
        return np.zeros(num_frames, dtype=bool)
    centers = frame_centers_s(num_frames)
    scored = np.zeros(num_frames, dtype=bool)
    for start_s, end_s in regions:
        scored |= (centers >= start_s) & (centers < end_s)
    return ~scored
