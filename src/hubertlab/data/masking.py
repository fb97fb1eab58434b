"""Span masking for masked prediction (REFERENCE 2.4): the `[mask]` table of a training config
(MaskConfig, drawn by the collator for every task that masks) and a pure function of the frame
lengths and a torch.Generator, so a seeded run masks the same frames every time."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The [mask] keys, which HuBERT's and SpidR's model configs held before masking became a data
# setting: still read from `[model.overrides]` (with a warning) and from stored model configs.
MASK_KEYS = ("mask_prob", "mask_length", "min_masks")


@dataclass(frozen=True)
class MaskConfig:
    """The span mask of masked prediction (`[mask]`), drawn once per batch by the collator;
    the same for HuBERT, SpidR and DinoSR (fairseq's and the spidr package's defaults)."""

    mask_prob: float = 0.8  # model.mask_prob: span starts per frame times mask_length
    mask_length: int = 10  # model.mask_length: frames per span
    min_masks: int = 2  # min_masks of fairseq's compute_mask_indices: spans per row, at least

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob: must be in [0, 1], got {self.mask_prob}")
        if self.mask_length < 1:
            raise ValueError(f"mask_length: must be >= 1, got {self.mask_length}")
        if self.min_masks < 0:
            raise ValueError(f"min_masks: must be >= 0, got {self.min_masks}")

    def draw(
        self, frame_lengths: torch.Tensor, generator: torch.Generator, num_frames: int
    ) -> torch.Tensor:
        """A (batch, num_frames) bool span mask (compute_span_mask with these settings)."""
        return compute_span_mask(
            frame_lengths,
            mask_prob=self.mask_prob,
            mask_length=self.mask_length,
            min_masks=self.min_masks,
            generator=generator,
            num_frames=num_frames,
        )


def compute_span_mask(
    frame_lengths: torch.Tensor,
    *,
    mask_prob: float = 0.8,
    mask_length: int = 10,
    min_masks: int = 2,
    generator: torch.Generator | None = None,
    num_frames: int | None = None,
) -> torch.Tensor:
    """Which frames to mask, as a (batch, frames) bool tensor on the CPU.

    Per row of `n` valid frames: int(mask_prob * n / mask_length + U[0, 1)) spans (at least
    `min_masks`) start at distinct random frames; spans may overlap. Every row is then trimmed
    (randomly) to the smallest masked count in the batch, as fairseq does, so rows weigh the
    same. About 50% of the frames end up masked with the defaults. Padded frames are never
    masked; rows shorter than `mask_length` get no spans and do not lower the others' count.
    `num_frames` (default: the longest row) sets the width of the result.
    """
    lengths = [int(n) for n in torch.as_tensor(frame_lengths).reshape(-1).tolist()]
    width = max(lengths, default=0) if num_frames is None else num_frames
    if any(n > width for n in lengths):
        raise ValueError(f"frame length {max(lengths)} exceeds num_frames {width}")
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    if mask_prob <= 0 or width == 0:
        return mask
    offsets = torch.arange(mask_length)
    rows: list[torch.Tensor | None] = []
    for n in lengths:
        num_starts = n - mask_length + 1  # spans lie fully inside the row
        if num_starts < 1:
            rows.append(None)
            continue
        u = torch.rand((), generator=generator).item()
        num_spans = max(min_masks, int(mask_prob * n / mask_length + u))
        num_spans = min(num_spans, num_starts)
        starts = torch.randperm(num_starts, generator=generator)[:num_spans]
        rows.append(torch.unique(starts[:, None] + offsets))
    counts = [len(r) for r in rows if r is not None]
    if not counts:
        return mask
    keep = min(counts)
    for i, frames in enumerate(rows):
        if frames is None:
            continue
        if len(frames) > keep:
            frames = frames[torch.randperm(len(frames), generator=generator)[:keep]]
        mask[i, frames] = True
    return mask
