"""Checks that keep evaluations from scoring the wrong thing: frame rates against the rate a
source records or the audio lengths, frame counts against the audio, and finite features.

A wrong frame rate does not fail on its own: ABX maps each token to other frames, PNMI puts
each unit under another phone, and both still print a plausible number."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from hubertlab.constants import RECEPTIVE_FIELD, SAMPLE_RATE

# Frames a count may lie outside frame_count_range's bounds by (rounding, trimmed edges).
FRAME_COUNT_TOLERANCE = 2


def same_rate(rate_hz: float, frame_shift_s: float) -> bool:
    return abs(rate_hz * frame_shift_s - 1.0) < 1e-6


def check_frame_shift(frame_shift_s: float | None, rate_hz: float, source: str) -> float:
    """`frame_shift_s` if it agrees with the rate `source` records (or is None: then the
    recorded rate's shift); a contradicting shift is an error naming both rates."""
    if frame_shift_s is None:
        return 1.0 / rate_hz
    if not same_rate(rate_hz, frame_shift_s):
        raise ValueError(
            f"--frame-shift {frame_shift_s:g} s means {1 / frame_shift_s:g} frames/s, but "
            f"{source} is {rate_hz:g} frames/s; leave --frame-shift out to use that rate"
        )
    return frame_shift_s


def frame_count_range(num_samples: int, frame_shift_s: float) -> tuple[int, int]:
    """The frame counts features at `frame_shift_s` may have for `num_samples` of audio: from
    what a 25 ms window yields without padding (the HuBERT CNN, Kaldi MFCC) to what centred
    padding yields, give or take FRAME_COUNT_TOLERANCE frames."""
    hop_samples = frame_shift_s * SAMPLE_RATE
    unpadded = max(0.0, (num_samples - RECEPTIVE_FIELD) / hop_samples + 1)
    centred = num_samples / hop_samples + 1
    low = max(0, math.floor(unpadded) - FRAME_COUNT_TOLERANCE)
    return low, math.ceil(centred) + FRAME_COUNT_TOLERANCE


def check_frame_counts(
    num_frames: Mapping[str, int],
    num_samples: Mapping[str, int],
    frame_shift_s: float,
    source: str,
    audio: str,
) -> None:
    """Every file's frame count must fit its audio duration at `frame_shift_s`
    (`frame_count_range`); the error names the file and both rates."""
    for fileid, frames in num_frames.items():
        if fileid not in num_samples:
            continue
        low, high = frame_count_range(num_samples[fileid], frame_shift_s)
        if not low <= frames <= high:
            seconds = num_samples[fileid] / SAMPLE_RATE
            data_rate = f"{frames / seconds:.1f}" if seconds > 0 else "inf"
            raise ValueError(
                f"{source}: {fileid!r} has {frames} frames for {seconds:.3f} s of audio "
                f"({audio}), i.e. {data_rate} frames/s, but the frame shift {frame_shift_s:g} s "
                f"means {1 / frame_shift_s:g} frames/s ({low}-{high} frames): pass the "
                "features' --frame-shift, or the manifest of the audio they were computed from"
            )


def check_finite(frames: np.ndarray | torch.Tensor, fileid: str, source: str) -> None:
    """Refuse features holding NaN or inf: distances to them compare false, and ABX would
    count those comparisons as errors or ties, still printing a score."""
    finite = torch.isfinite(frames).all() if torch.is_tensor(frames) else np.isfinite(frames).all()
    if not bool(finite):
        raise ValueError(
            f"{source}: features of {fileid!r} hold NaN or inf values (a diverged model, "
            "or broken audio or feature files)"
        )
