"""Frame targets on the HuBERT frame grid, overlaps, and the UEM ignore mask."""

from __future__ import annotations

import numpy as np
import pytest

from hubertlab.constants import num_frames
from hubertlab.data.frame_targets import frame_span, frame_targets, ignore_mask
from hubertlab.data.rttm import VTC_CLASSES, Turn


def _overlaps_by_samples(onset_s: float, offset_s: float, frames: int) -> np.ndarray:
    """Reference rule spelled out in samples: frame k sees [320k, 320k + 400)."""
    a, b = round(onset_s * 16000), round(offset_s * 16000)
    k = np.arange(frames)
    return (320 * k < b) & (320 * k + 400 > a)


@pytest.mark.parametrize(
    "onset_s, offset_s",
    [
        (0.0, 0.02),
        (0.025, 0.04),
        (0.0249, 0.0251),
        (1.0, 2.0),
        (0.013, 0.333),
        (3.97, 4.5),
        (3.99, 4.5),
    ],
)
def test_frame_span_matches_sample_rule(onset_s, offset_s):
    frames = num_frames(64000)  # 199 frames per 4 s
    assert frames == 199
    first, stop = frame_span(onset_s, offset_s, frames)
    on = np.zeros(frames, dtype=bool)
    on[first:stop] = True
    np.testing.assert_array_equal(on, _overlaps_by_samples(onset_s, offset_s, frames))


def test_overlapping_classes_give_several_ones():
    turns = [Turn("r", 0.5, 1.0, "KCHI"), Turn("r", 1.0, 1.0, "FEM"), Turn("r", 3.0, 0.5, "MAL")]
    targets = frame_targets(turns, 199, VTC_CLASSES)
    assert targets.shape == (199, 4)
    both = np.flatnonzero(targets[:, 0] * targets[:, 3])
    # KCHI [0.5, 1.5) and FEM [1.0, 2.0) overlap in [1.0, 1.5): frames 49..74
    assert both[0] == 49 and both[-1] == 74
    assert targets.sum(axis=1).max() == 2
    assert targets[:, 1].sum() == 0  # no OCH
    np.testing.assert_array_equal(targets[:, 2], _overlaps_by_samples(3.0, 3.5, 199))
    with pytest.raises(ValueError, match="r: unknown class 'DOG'"):
        frame_targets([Turn("r", 0, 1, "DOG")], 10, VTC_CLASSES)


def test_ignore_mask_from_uem():
    ignore = ignore_mask([(1.0, 2.0)], 199)
    scored = np.flatnonzero(~ignore)
    # centres 0.02 k + 0.0125 in [1.0, 2.0): k = 50 .. 99
    assert scored[0] == 50 and scored[-1] == 99 and len(scored) == 50
    assert not ignore_mask(None, 10).any()
    assert ignore_mask([], 10).all()
