"""The numbers every stage shares: sample rate and the CNN's frame layout, defined once."""

from __future__ import annotations

from collections.abc import Sequence

SAMPLE_RATE = 16_000
# The HuBERT CNN sees 400 samples per frame and hops 320 (20 ms at 16 kHz): 50 frames/s.
RECEPTIVE_FIELD = 400
FRAME_HOP = 320
LABEL_RATE_HZ = SAMPLE_RATE // FRAME_HOP
# Kaldi MFCC: 25 ms window (400 samples), 10 ms shift (160 samples): 100 frames/s.
MFCC_HOP = 160


def conv_layout(kernels: Sequence[int], strides: Sequence[int]) -> tuple[int, int]:
    """(receptive field, hop) in samples of a stack of 1-d convolutions."""
    window, hop = 1, 1
    for kernel, stride in zip(kernels, strides, strict=True):
        window += (kernel - 1) * hop
        hop *= stride
    return window, hop


def num_frames(num_samples: int) -> int:
    """Frames the CNN encoder yields for `num_samples` samples: floor((n - 400) / 320) + 1."""
    if num_samples < RECEPTIVE_FIELD:
        return 0
    return (num_samples - RECEPTIVE_FIELD) // FRAME_HOP + 1
