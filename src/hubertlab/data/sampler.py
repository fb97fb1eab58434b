"""Length-bucketed batches under a total-audio budget, split across ranks, resumable.

The list of batches of an epoch is a pure function of (lengths, budget, seed, epoch): it does not
depend on the number of ranks. Rank r takes batches r, r + world, r + 2 world, ... so one process
with `grad_accum = world` sees exactly the batches that `world` processes see in one step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

log = logging.getLogger(__name__)


class SampleKey(NamedTuple):
    """What a dataset needs to load one item deterministically, whatever worker loads it."""

    epoch: int
    position: int  # index of the batch in this rank's list for the epoch
    batch: int  # index of the batch in the epoch's global list (>= num_batches: padding)
    index: int  # row of the manifest


def make_batches(
    lengths: Sequence[int], max_batch_samples: int, rng: np.random.Generator | None
) -> list[list[int]]:
    """Group items of similar length so that count * longest <= max_batch_samples.

    Items are sorted by length (random tie-break when `rng` is given) and cut greedily, then the
    batch order is shuffled. An item longer than the budget gets a batch of its own."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
    else:
        order = np.lexsort((rng.random(len(lengths)), lengths))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order[::-1].tolist():  # longest first: the first item of a batch is its longest
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * longest > max_batch_samples:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    if rng is not None:
        batches = [batches[j] for j in rng.permutation(len(batches))]
    return batches


class BucketBatchSampler:
    """Distributed, resumable batch sampler; yields lists of SampleKey.

    Every rank gets the same number of batches per epoch: the global list is padded by wrapping
    around to a multiple of `num_replicas` (padded batches have `key.batch >= num_batches`).
    Iterating past the end of an epoch starts the next one. `state_dict()` after consuming n
    batches directly from the iterator, restored with `load_state_dict`, yields exactly the rest.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_batch_samples: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if max_batch_samples < 1:
            raise ValueError(f"max_batch_samples must be >= 1, got {max_batch_samples}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if len(lengths) == 0:
            raise ValueError("no items to sample from (empty dataset after filtering)")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_batch_samples = int(max_batch_samples)
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.position = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def global_batches(self, epoch: int) -> list[list[int]]:
        """All batches of `epoch`, before padding and the split across ranks."""
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
            self._cache = (epoch, make_batches(self.lengths, self.max_batch_samples, rng))
        return self._cache[1]

    @property
    def num_batches(self) -> int:
        """Real (unpadded) batches per epoch, all ranks together."""
        return len(self.global_batches(self.epoch))

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return -(-self.num_batches // self.num_replicas)

    def rank_batches(self, epoch: int) -> list[tuple[int, list[int]]]:
        """(global batch id, items) for this rank in `epoch`."""
        batches = self.global_batches(epoch)
        per_rank = -(-len(batches) // self.num_replicas)
        ids = range(self.rank, per_rank * self.num_replicas, self.num_replicas)
        return [(b, batches[b % len(batches)]) for b in ids]

    def __iter__(self) -> Iterator[list[SampleKey]]:
        epoch = self.epoch
        batches = self.rank_batches(epoch)
        while self.position < len(batches):
            position = self.position
            batch_id, items = batches[position]
            self.position += 1
            yield [SampleKey(epoch, position, batch_id, i) for i in items]
        self.epoch, self.position = epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            log.warning("sampler seed changed from %s to %s on resume", state["seed"], self.seed)
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        if self.position > len(self.rank_batches(self.epoch)):
            raise ValueError(
                f"sampler state position {self.position} is past the end of epoch {self.epoch}"
            )
