"""Bucketed, distributed, resumable batch sampler."""

from __future__ import annotations

import numpy as np
import pytest

from hubertlab.data.sampler import BucketBatchSampler, make_batches

LENGTHS = [16000, 8000, 24000, 32000, 12000, 16000, 40000, 9000, 30000, 20000, 15000, 7000]


def items(batches):
    return [[k.index for k in b] for b in batches]


def test_batches_respect_the_audio_budget_and_cover_every_item():
    budget = 64000
    batches = make_batches(LENGTHS, budget, np.random.default_rng(0))
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    for b in batches:
        assert len(b) * max(LENGTHS[i] for i in b) <= budget or len(b) == 1


def test_item_longer_than_budget_gets_its_own_batch():
    assert make_batches([100, 5, 5], 50, None) == [[0], [2, 1]]


def test_epochs_differ_but_are_reproducible():
    a = BucketBatchSampler(LENGTHS, 64000, seed=3)
    b = BucketBatchSampler(LENGTHS, 64000, seed=3)
    first, second = items(a), items(a)
    assert first == items(b) and second == items(b)
    assert first != second
    assert a.epoch == 2


@pytest.mark.parametrize("world", [2, 3, 5])
def test_ranks_get_equal_counts_and_interleave_the_global_list(world):
    single = BucketBatchSampler(LENGTHS, 50000, seed=1)
    global_batches = single.global_batches(0)
    per_rank = [
        list(BucketBatchSampler(LENGTHS, 50000, seed=1, num_replicas=world, rank=r))
        for r in range(world)
    ]
    assert len({len(p) for p in per_rank}) == 1
    assert all(
        len(p) == len(BucketBatchSampler(LENGTHS, 50000, num_replicas=world)) for p in per_rank
    )
    # Step s of rank r is global batch s * world + r (wrapping around for the padding).
    for r, batches in enumerate(per_rank):
        for s, batch in enumerate(batches):
            g = s * world + r
            assert batch[0].batch == g
            assert [k.index for k in batch] == global_batches[g % len(global_batches)]
    real = {k.batch for p in per_rank for b in p for k in b if k.batch < len(global_batches)}
    assert real == set(range(len(global_batches)))


@pytest.mark.parametrize("consumed", [0, 1, 3, 4, 6, 9])
def test_resume_yields_exactly_the_remaining_batches(consumed):
    reference = BucketBatchSampler(LENGTHS, 40000, seed=5, num_replicas=2, rank=1)
    per_epoch = len(reference)
    expected = [b for _ in range(3) for b in reference]  # three epochs
    sampler = BucketBatchSampler(LENGTHS, 40000, seed=5, num_replicas=2, rank=1)
    it, got = iter(sampler), []
    while len(got) < consumed:
        try:
            got.append(next(it))
        except StopIteration:
            it = iter(sampler)
    state = sampler.state_dict()
    resumed = BucketBatchSampler(LENGTHS, 40000, seed=5, num_replicas=2, rank=1)
    resumed.load_state_dict(state)
    while len(got) < 3 * per_epoch:
        got.extend(resumed)
    assert got[: 3 * per_epoch] == expected


def test_bad_state_and_arguments_are_rejected():
    sampler = BucketBatchSampler(LENGTHS, 40000)
    with pytest.raises(ValueError, match="position"):
        sampler.load_state_dict({"epoch": 0, "position": 999})
    with pytest.raises(ValueError, match="rank"):
        BucketBatchSampler(LENGTHS, 40000, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="no items"):
        BucketBatchSampler([], 40000)
