"""Iteration-1 targets: the feature-store extractor for 39-d MFCC at 100 Hz (the computation is
models.mfcc, which the MFCC frame encoder of fine-tuning shares) and the settings recorded
with a store."""

from __future__ import annotations

import numpy as np

from hubertlab.constants import MFCC_HOP, RECEPTIVE_FIELD, SAMPLE_RATE
from hubertlab.fingerprint import settings_fingerprint
from hubertlab.models.mfcc import (
    CEPSTRAL_LIFTER,
    DELTA_WINDOW,
    FFT_SIZE,
    LOW_FREQ_HZ,
    MFCC_DIM,
    NUM_CEPS,
    NUM_MEL_BINS,
    PREEMPHASIS,
    mfcc_num_frames,
    mfcc_of_waveform,
)

# Everything that shapes the numbers, recorded with a store and the k-means fitted on it.
MFCC_SETTINGS = {
    "window": "povey", "frame_length": RECEPTIVE_FIELD, "frame_shift": MFCC_HOP,
    "snip_edges": True, "remove_dc_offset": True, "dither": 0.0, "preemphasis": PREEMPHASIS,
    "fft_size": FFT_SIZE, "num_mel_bins": NUM_MEL_BINS, "low_freq_hz": LOW_FREQ_HZ,
    "high_freq_hz": SAMPLE_RATE / 2, "num_ceps": NUM_CEPS, "use_energy": False,
    "cepstral_lifter": CEPSTRAL_LIFTER, "deltas": 2, "delta_window": DELTA_WINDOW,
}  # fmt: skip


class MfccExtractor:
    """The feature-store extractor for 39-d MFCC at 100 Hz."""

    dim = MFCC_DIM
    frame_rate_hz = SAMPLE_RATE // MFCC_HOP

    def settings(self) -> dict:
        return {
            "kind": "mfcc", "dim": MFCC_DIM, "frame_rate_hz": self.frame_rate_hz,
            "mfcc": MFCC_SETTINGS, "fingerprint": settings_fingerprint(MFCC_SETTINGS),
        }  # fmt: skip

    def num_frames(self, num_samples: int) -> int:
        return mfcc_num_frames(num_samples)

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        return mfcc_of_waveform(wav)
