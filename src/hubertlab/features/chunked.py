"""The chunk loop every layer extractor shares (our models' and other transformers families').

Long files run in chunks whose borders sit on multiples of the 320-sample hop, so chunk
frame j is exactly frame (start + j) of the whole file; each chunk gets `context_seconds` of
extra audio on both sides whose frames are dropped, so the attention context at a border is
(nearly) what the whole file would give. The frame count is always num_frames(num_samples).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from hubertlab.constants import FRAME_HOP, LABEL_RATE_HZ, RECEPTIVE_FIELD, num_frames


def chunk_options(dtype: str, chunk_seconds: float, context_seconds: float) -> tuple[int, int]:
    """Check a layer extractor's options; (frames per chunk, frames of context each side)."""
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    if chunk_seconds <= 0 or context_seconds < 0:
        raise ValueError(
            f"need chunk_seconds > 0 and context_seconds >= 0, got {chunk_seconds}, "
            f"{context_seconds}"
        )
    return max(1, round(chunk_seconds * LABEL_RATE_HZ)), round(context_seconds * LABEL_RATE_HZ)


def chunks(total: int, chunk_frames: int, context_frames: int) -> Iterator[tuple[int, ...]]:
    """(first, last, lo, hi) for each chunk of a file of `total` frames: output frames
    [first, last) are computed from input frames [lo, hi), context included on both sides."""
    for first in range(0, total, chunk_frames):
        last = min(first + chunk_frames, total)
        yield first, last, max(0, first - context_frames), min(total, last + context_frames)


def extract_in_chunks(
    wav: torch.Tensor,
    run: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    chunk_frames: int,
    context_frames: int,
    *,
    take_tail: bool,
    where: str,
) -> np.ndarray:
    """(num_frames(len(wav)), dim) float32 features of a (num_samples,) waveform, from
    `run(piece) -> (frames, dim)` on each chunk. With `take_tail`, the last chunk also takes
    the samples after the last full frame (a GroupNorm CNN normalises over all the samples it
    sees, so a file in one chunk then gives exactly the model's output on the whole file).
    Errors name `where`."""
    total = num_frames(len(wav))
    out = np.empty((total, dim), np.float32)
    for first, last, lo, hi in chunks(total, chunk_frames, context_frames):
        start = lo * FRAME_HOP
        end = len(wav) if take_tail and hi == total else (hi - 1) * FRAME_HOP + RECEPTIVE_FIELD
        feats = run(wav[start:end])
        if feats.shape[0] != hi - lo:
            raise ValueError(
                f"{where}: model gave {feats.shape[0]} frames for samples [{start}, {end}), "
                f"expected {hi - lo}; its CNN does not have a {RECEPTIVE_FIELD}-sample window "
                f"and {FRAME_HOP}-sample hop"
            )
        out[first:last] = feats[first - lo : last - lo].cpu().numpy()
    return out
