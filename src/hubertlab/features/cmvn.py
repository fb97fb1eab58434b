"""Per-utterance mean and variance normalisation (CMVN) of frame features: the usual speech
front end, the ABX baseline's normalisation, and an option for k-means targets (units of
normalised features carry less of the speaker: `[[iterations]] cmvn = true`)."""

from __future__ import annotations

import numpy as np


def utterance_cmvn(frames: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """(frames, dim) -> each dim at zero mean and unit variance over the utterance."""
    mean = frames.mean(0, keepdims=True)
    std = frames.std(0, keepdims=True)
    return ((frames - mean) / (std + eps)).astype(np.float32)


class CmvnExtractor:
    """Another extractor's features, each utterance normalised on its own. Its settings say
    so (`cmvn: true`), so a k-means fitted on them is not applied to raw features."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.frame_rate_hz = inner.frame_rate_hz

    def settings(self) -> dict:
        return {**self.inner.settings(), "cmvn": True}

    def num_frames(self, num_samples: int) -> int:
        return self.inner.num_frames(num_samples)

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        return utterance_cmvn(np.asarray(self.inner(wav), dtype=np.float32))
