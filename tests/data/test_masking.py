"""Span masking: fraction masked, seeded determinism, padding never masked."""

from __future__ import annotations

import pytest
import torch

from hubertlab.data.masking import compute_span_mask


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_about_half_of_the_frames_are_masked():
    mask = compute_span_mask(torch.full((16,), 400), generator=gen(0))
    assert mask.shape == (16, 400)
    assert 0.45 < mask.float().mean().item() < 0.6
    # Rows are trimmed to the same masked count (fairseq's require_same_masks).
    assert len(set(mask.sum(1).tolist())) == 1


def test_seeded_masks_repeat_and_seeds_differ():
    lengths = torch.tensor([300, 250, 120])
    a = compute_span_mask(lengths, generator=gen(3))
    b = compute_span_mask(lengths, generator=gen(3))
    c = compute_span_mask(lengths, generator=gen(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_padded_frames_are_never_masked():
    lengths = torch.tensor([300, 250, 120, 64])
    for seed in range(20):
        mask = compute_span_mask(lengths, generator=gen(seed), num_frames=320)
        assert mask.shape == (4, 320)
        frames = torch.arange(320)[None]
        assert not (mask & (frames >= lengths[:, None])).any()
        counts = mask.sum(1)
        assert (counts == counts[0]).all() and counts[0] > 0


def test_short_rows_do_not_cancel_the_batch():
    mask = compute_span_mask(torch.tensor([200, 5]), generator=gen(0))
    assert mask[1].sum() == 0 and mask[0].sum() > 50


def test_min_masks_and_no_masking():
    mask = compute_span_mask(torch.tensor([40]), mask_prob=0.01, min_masks=2, generator=gen(0))
    assert mask.sum() >= 10  # 2 spans of 10, possibly overlapping
    assert compute_span_mask(torch.tensor([40]), mask_prob=0.0, generator=gen(0)).sum() == 0
    with pytest.raises(ValueError, match="num_frames"):
        compute_span_mask(torch.tensor([40]), num_frames=30, generator=gen(0))
