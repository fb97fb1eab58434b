"""One rank's streamed training batches through a DataLoader, resumable with its workers.

Each DataLoader worker runs one SlotStream (hubertlab.data.stream) and hands the main process
(batch, the slot's state just after it). A DataLoader serves iterable-dataset workers
round-robin (worker 0, 1, ..., 0, 1, ...; the stream is endless, so no worker ever drops out),
so the main process knows which *logical* worker comes next. Physical worker p of a new
DataLoader plays logical worker (p + rotation) % num_workers, with rotation = the logical
worker due next at the checkpoint: a resumed run yields exactly the batches an uninterrupted one
would, whatever the read-ahead of the workers was when the checkpoint was written.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hubertlab.data.dataset import Batch, CropCollator
from hubertlab.data.stream import SlotStream

log = logging.getLogger(__name__)


class StreamError(ValueError):
    """Shards that cannot be streamed (an unsafe member, missing or bad units), found by a
    DataLoader worker: one line naming the shard and member."""


class ShardStream(IterableDataset):
    """Endless (batch, state) pairs of the slots of one rank, one slot per DataLoader worker."""

    def __init__(
        self,
        urls: list[str],
        collate: CropCollator,
        *,
        rank: int,
        world_size: int,
        num_workers: int,
        seed: int,
        buffer_size: int,
        batch_samples: int,
        num_unit_sets: int,
        states: list[dict[str, Any] | None],
        rotation: int = 0,
        start_epoch: int = 0,
        standardize: bool = False,
        num_units: int | None = None,
    ) -> None:
        self.urls, self.collate = urls, collate
        self.rank, self.world_size = rank, world_size
        self.num_logical = max(num_workers, 1)
        self.seed, self.buffer_size = seed, buffer_size
        self.batch_samples, self.num_unit_sets = batch_samples, num_unit_sets
        self.states, self.rotation, self.start_epoch = states, rotation, start_epoch
        self.standardize, self.num_units = standardize, num_units

    def __iter__(self) -> Iterator[tuple[Batch, dict[str, Any]]]:
        info = get_worker_info()
        physical = 0 if info is None else info.id
        logical = (physical + self.rotation) % self.num_logical
        stream = SlotStream(
            self.urls,
            self.collate,
            slot=logical * self.world_size + self.rank,
            num_slots=self.num_logical * self.world_size,
            seed=self.seed,
            buffer_size=self.buffer_size,
            batch_samples=self.batch_samples,
            num_unit_sets=self.num_unit_sets,
            state=self.states[logical],
            standardize=self.standardize,
            num_units=self.num_units,
        )
        if self.states[logical] is None:
            stream.epoch = self.start_epoch
        while True:
            try:
                batch = stream.next_batch()
            except ValueError as e:
                if info is None:
                    raise
                # Handed over as data: the DataLoader would re-raise it in the main process
                # wrapped in the worker's whole traceback.
                yield None, {"worker": logical, "error": str(e)}
                return
            yield batch, {"worker": logical, **stream.state_dict()}


class StreamBatches:
    """Endless, resumable batches of one rank streamed from shards (the Batches protocol of
    hubertlab.tasks.base); state_dict() is the position just after the last batch taken."""

    def __init__(
        self,
        urls: list[str],
        collate: CropCollator,
        *,
        batch_samples: int,
        num_unit_sets: int,
        buffer_size: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        standardize: bool = False,
        num_units: int | None = None,
    ) -> None:
        self.urls, self.collate = urls, collate
        self.num_units = num_units  # unit ids must be below it (None: any integer >= 0)
        self.batch_samples, self.num_unit_sets = batch_samples, num_unit_sets
        self.buffer_size = buffer_size
        self.rank, self.world_size = rank, world_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.standardize = standardize
        self.num_logical = max(num_workers, 1)
        self.states: list[dict[str, Any] | None] = [None] * self.num_logical
        self.next_worker = 0
        self.start_epoch = 0

    def __iter__(self) -> Iterator[Batch]:
        dataset = ShardStream(
            self.urls, self.collate, rank=self.rank, world_size=self.world_size,
            num_workers=self.num_workers, seed=self.collate.seed, buffer_size=self.buffer_size,
            batch_samples=self.batch_samples, num_unit_sets=self.num_unit_sets,
            states=list(self.states), rotation=self.next_worker, start_epoch=self.start_epoch,
            standardize=self.standardize, num_units=self.num_units,
        )  # fmt: skip
        loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            # Its own generator: starting workers must not draw from the global torch RNG.
            generator=torch.Generator().manual_seed(self.collate.seed),
            multiprocessing_context="fork" if self.num_workers > 0 and _can_fork() else None,
        )
        for batch, state in loader:
            if "error" in state:  # bad data found in a worker (a refused member, bad units)
                raise StreamError(state["error"])
            logical = state.pop("worker")
            if logical != self.next_worker:  # the DataLoader's round-robin is what resumes rely on
                raise RuntimeError(
                    f"stream batch from worker {logical}, expected {self.next_worker}"
                )
            self.states[logical] = state
            self.next_worker = (logical + 1) % self.num_logical
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "stream", "world_size": self.world_size, "num_workers": self.num_logical,
            "next_worker": self.next_worker, "workers": list(self.states),
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "stream":
            raise ValueError(
                "the checkpoint's data position is one of a manifest run (data.train_manifest); "
                "this run streams data.train_shards: start it in a new run.out_dir"
            )
        workers = state["workers"]
        same = (state["world_size"], state["num_workers"]) == (self.world_size, self.num_logical)
        if same and all(w is None or w["num_shards"] == len(self.urls) for w in workers):
            self.states, self.next_worker = list(workers), int(state["next_worker"])
            return
        # Another layout of slots: no exact continuation; start the slots anew one epoch on.
        self.start_epoch = 1 + max((w["epoch"] for w in workers if w is not None), default=-1)
        log.warning(
            "stream state of %d rank(s) x %d worker(s) over %s shards; now %d x %d over %d: "
            "starting every slot afresh at epoch %d",
            state["world_size"], state["num_workers"],
            {w["num_shards"] for w in workers if w is not None}, self.world_size,
            self.num_logical, len(self.urls), self.start_epoch,
        )  # fmt: skip


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()
