"""Speed perturbation of training utterances (Kaldi's 0.9 / 1.0 / 1.1): the audio is
resampled as if played `factor` times faster, which moves pitch and formants together like a
different vocal tract, and the utterance's frame units are stretched to the new length.

A factor is drawn per utterance, epoch and run seed, so a resumed run and any worker layout
see the same audio. Validation and evaluation audio is never perturbed.
"""

from __future__ import annotations

import numpy as np
import soxr

from hubertlab.constants import FRAME_HOP, RECEPTIVE_FIELD, SAMPLE_RATE, num_frames

MIN_FACTOR, MAX_FACTOR = 0.5, 2.0


def check_speeds(speeds: tuple[float, ...], name: str = "speed_perturb") -> None:
    """A ValueError naming `name` unless every factor lies in [0.5, 2]."""
    bad = [s for s in speeds if not MIN_FACTOR <= s <= MAX_FACTOR]
    if bad:
        raise ValueError(
            f"{name}: speed factors must lie in [{MIN_FACTOR}, {MAX_FACTOR}], got {bad} "
            "(Kaldi's recipe uses [0.9, 1.0, 1.1])"
        )


def draw_speed(speeds: tuple[float, ...], seed: int, epoch: int, index: int) -> float:
    """One of `speeds`, uniformly, as a function of (seed, epoch, index) alone."""
    rng = np.random.default_rng([seed, epoch, index, 0x5BEED])
    return float(speeds[int(rng.integers(len(speeds)))])


def perturb_speed(
    wav: np.ndarray, units: list[np.ndarray | None], factor: float
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """`wav` (samples,) played `factor` times faster (len / factor samples), and each unit
    sequence (one unit per 20 ms frame of `wav`) stretched to the new frame count: a new frame
    takes the unit of the original frame whose centre is nearest in time."""
    if factor == 1.0:
        return wav, units
    out = soxr.resample(wav, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32, copy=False)
    if len(out) < RECEPTIVE_FIELD:
        return wav, units  # too short to keep a frame: leave it as it is
    centres = np.arange(num_frames(len(out))) * FRAME_HOP + RECEPTIVE_FIELD / 2
    source = np.rint((centres * factor - RECEPTIVE_FIELD / 2) / FRAME_HOP).astype(np.int64)
    return out, [None if u is None else u[np.clip(source, 0, len(u) - 1)] for u in units]
