"""Validation batches, pretraining's and CTC fine-tuning's alike: a dataset in fixed length
buckets, the same crops and masks every time, whatever the run's seed (runs and checkpoints
compare)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import torch
from torch.utils.data import DataLoader, Dataset

from hubertlab.data.dataset import Batch
from hubertlab.data.sampler import BucketBatchSampler

# Validation crops and masks never depend on the run's seed.
VALID_SEED = 1234


class ValidBatches:
    """A validation set as a fixed list of batches: `dataset` (indexed by SampleKey) in length
    buckets of `batch_samples` (by `lengths`, in samples), made by `collate`; at most
    `max_batches` (0: all).

    Every rank iterates the same number of batches (FSDP forwards are collective); batches that
    only pad a rank's share have `count` False and are left out of the metrics."""

    def __init__(
        self,
        dataset: Dataset,
        lengths: Sequence[int],
        batch_samples: int,
        collate: Callable[[list], Batch],
        *,
        rank: int = 0,
        world_size: int = 1,
        max_batches: int = 0,
        num_workers: int = 0,
    ) -> None:
        self.dataset = dataset
        self.sampler = BucketBatchSampler(
            lengths, batch_samples, seed=VALID_SEED, shuffle=False, num_replicas=world_size,
            rank=rank,
        )  # fmt: skip
        self.collate = collate
        self.max_batches = max_batches
        self.num_workers = num_workers

    def __iter__(self) -> Iterator[Batch]:
        self.sampler.load_state_dict({"epoch": 0, "position": 0, "seed": VALID_SEED})
        num_real = self.sampler.num_batches
        if self.max_batches:
            num_real = min(num_real, self.max_batches)
        loader = DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            collate_fn=self.collate,
            num_workers=min(self.num_workers, 1),
            # Its own generator: iterating must not draw from the global torch RNG.
            generator=torch.Generator().manual_seed(VALID_SEED),
        )
        world = self.sampler.num_replicas
        for batch in loader:
            # Stop once every rank is past the cap (all ranks stop at the same position).
            if self.max_batches and batch.position * world >= num_real:
                break
            yield replace(batch, count=batch.batch_id < num_real)
