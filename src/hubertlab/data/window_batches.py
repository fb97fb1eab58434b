"""VTC training batches, as the training loop takes them (data.dataset.Batch): random windows
(data.windows.WindowDataset), endless and resumable; batch b of epoch e holds windows
[b * size, (b + 1) * size) and rank r takes batches r, r + world, ...; the state is (epoch,
next position). Validation: consecutive windows over every dev recording, fixed.
Batch.frame_targets (batch, frames, classes) float, Batch.frame_ignore (batch, frames) bool.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader

from hubertlab.constants import FRAME_HOP, RECEPTIVE_FIELD, num_frames
from hubertlab.data.dataset import Batch
from hubertlab.data.windows import Recording, WindowDataset, read_window


def window_batch(items: Sequence[tuple], *, epoch: int = 0, position: int = 0, batch_id: int = 0):
    """Batch of (waveform, targets, ignore) windows of equal length."""
    waveforms = torch.stack([w for w, _, _ in items])  # (batch, samples)
    frames = num_frames(waveforms.shape[1])
    return Batch(
        waveforms=waveforms,
        lengths=torch.full((len(items),), waveforms.shape[1]),
        frame_lengths=torch.full((len(items),), frames),
        labels=[],
        mask=None,
        epoch=epoch,
        position=position,
        batch_id=batch_id,
        frame_targets=torch.stack([t for _, t, _ in items]),  # (batch, frames, classes)
        frame_ignore=torch.stack([m for _, _, m in items]),  # (batch, frames)
    )


class WindowBatches:
    """Endless VTC training batches of one rank; state_dict is the position after the last
    batch taken, so a resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(
        self,
        dataset: WindowDataset,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.num_workers = num_workers
        self.epoch, self.position = 0, 0

    @property
    def batches_per_rank(self) -> int:
        total = math.ceil(len(self.dataset) / self.batch_size)
        return math.ceil(total / self.world_size)

    def _indices(self, position: int) -> tuple[int, list[int]]:
        """Global batch id and window indices of this rank's batch `position` (wrapping
        around to pad the last round across ranks)."""
        total = math.ceil(len(self.dataset) / self.batch_size)
        batch_id = self.rank + position * self.world_size
        first = (batch_id % total) * self.batch_size
        return batch_id, list(range(first, min(first + self.batch_size, len(self.dataset))))

    def __iter__(self) -> Iterator[Batch]:
        while True:
            epoch, start = self.epoch, self.position
            self.dataset.set_epoch(epoch)
            positions = list(range(start, self.batches_per_rank))
            loader = DataLoader(
                self.dataset,
                batch_sampler=[self._indices(p)[1] for p in positions],
                collate_fn=list,
                num_workers=self.num_workers,
                multiprocessing_context="fork" if self.num_workers > 0 else None,
                # Its own generator: a new iterator must not draw from the global torch RNG
                # (dropout uses it, and a resumed run must see the same stream).
                generator=torch.Generator().manual_seed(self.dataset.seed),
            )
            for position, items in zip(positions, loader, strict=True):
                self.position = position + 1
                yield window_batch(
                    items, epoch=epoch, position=position, batch_id=self._indices(position)[0]
                )
            self.epoch, self.position = epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.dataset.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.dataset.load_state_dict(state)
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        if self.position > self.batches_per_rank:
            raise ValueError(f"window batches: position {self.position} is past the epoch's end")


class WindowValidBatches:
    """Consecutive non-overlapping windows over every dev recording (the last one zero-padded,
    its missing frames ignored), in fixed batches; rank r takes batches r, r + world, ..."""

    def __init__(
        self,
        recordings: Sequence[Recording],
        classes: Sequence[str],
        *,
        window_samples: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        max_batches: int = 0,
    ) -> None:
        self.classes = tuple(classes)
        self.window_samples = window_samples
        items = [
            (r, start)
            for r in recordings
            for start in range(0, r.num_samples - RECEPTIVE_FIELD + 1, window_samples)
        ]
        batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
        if max_batches:
            batches = batches[:max_batches]
        per_rank = math.ceil(len(batches) / world_size)
        self.num_real = len(batches)
        self.batches = [
            (b, batches[b % len(batches)]) for b in range(rank, per_rank * world_size, world_size)
        ]

    def __iter__(self) -> Iterator[Batch]:
        frames = num_frames(self.window_samples)
        for position, (batch_id, items) in enumerate(self.batches):
            windows = []
            for recording, start in items:
                wav = torch.from_numpy(read_window(recording.path, start, self.window_samples))
                targets, ignore = recording.window_targets(start // FRAME_HOP, frames, self.classes)
                windows.append((wav, torch.from_numpy(targets), torch.from_numpy(ignore)))
            batch = window_batch(windows, position=position, batch_id=batch_id)
            batch.count = batch_id < self.num_real
            yield batch
