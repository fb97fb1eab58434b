"""Batches for the fine-tuning tasks, as the training loop takes them (data.dataset.Batch),
endless and resumable for training, fixed for validation.

VTC: random windows (data.windows.WindowDataset); batch b of epoch e holds windows
[b * size, (b + 1) * size) and rank r takes batches r, r + world, ...; the state is (epoch,
next position). Batch.frame_targets (batch, frames, classes) float, Batch.frame_ignore
(batch, frames) bool.
CTC: whole utterances (never cropped: the transcript must match the audio), zero-padded, in
length buckets (data.sampler.BucketBatchSampler, data.dataset.ResumableLoader).
Batch.ctc_labels (batch, longest) int64 padded with -100, Batch.ctc_label_lengths (batch,).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from hubertlab.constants import FRAME_HOP, RECEPTIVE_FIELD, num_frames
from hubertlab.data.dataset import Batch, ResumableLoader
from hubertlab.data.manifest import Manifest
from hubertlab.data.sampler import BucketBatchSampler, SampleKey
from hubertlab.data.text import (
    SPECIAL_TOKENS,
    UNK,
    WORD_DELIMITER,
    CharVocab,
    normalize_text,
)
from hubertlab.data.windows import Recording, WindowDataset, read_window

log = logging.getLogger(__name__)

VALID_SEED = 1234


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


# ---------------------------------------------------------------- CTC utterances


def utterance_ids(
    manifest: Manifest, texts: Mapping[str, str], vocab: CharVocab, transcripts: Any
) -> list[list[int]]:
    """Token ids of every manifest row's transcript; a row without one is an error naming the
    manifest row and the transcripts file, and so are targets without a known character
    (check_unknown_characters)."""
    ids = []
    for row_number, row in enumerate(manifest, 1):
        if row.fileid not in texts:
            raise ValueError(
                f"{manifest.source}: row {row_number}: {row.fileid!r} has no transcript in "
                f"{transcripts}"
            )
        ids.append(vocab.encode(normalize_text(texts[row.fileid])))
    check_unknown_characters(ids, vocab, transcripts)
    return ids


def check_unknown_characters(
    ids: Sequence[list[int]], vocab: CharVocab, transcripts: Any, *, warn_above: float = 0.05
) -> None:
    """Refuse targets with no character (all empty or punctuation) or none in the vocabulary
    (CTC would learn to emit <unk>); warn when more than `warn_above` of them are <unk>."""
    unk, delimiter = vocab.tokens.index(UNK), vocab.tokens.index(WORD_DELIMITER)
    chars = sum(1 for row in ids for i in row if i != delimiter)
    unknown = sum(1 for row in ids for i in row if i == unk)
    if chars == 0:
        raise ValueError(
            f"{transcripts}: no character to train on (the texts are empty or all punctuation "
            "after normalization)"
        )
    if unknown == chars:
        raise ValueError(
            f"{transcripts}: none of the {chars} target characters is in the vocabulary "
            f"({''.join(vocab.tokens[len(SPECIAL_TOKENS) :])[:40]}): another language's vocab?"
        )
    if unknown > warn_above * chars:
        log.warning(
            "%s: %d of %d target characters (%.1f %%) are not in the vocabulary and train as %s",
            transcripts, unknown, chars, 100 * unknown / chars, UNK,
        )  # fmt: skip


class UtteranceDataset(torch.utils.data.Dataset):
    """Manifest rows under a length cap with their token ids; __getitem__ takes a SampleKey."""

    def __init__(self, manifest: Manifest, ids: Sequence[list[int]], max_samples: int) -> None:
        self.manifest = manifest
        self.rows = [i for i, row in enumerate(manifest) if RECEPTIVE_FIELD <= row.num_samples]
        long = [i for i in self.rows if manifest[i].num_samples > max_samples]
        if long:
            log.warning(
                "%s: %d utterances longer than %.1f s left out (first: %s)",
                manifest.source, len(long), max_samples / 16000, manifest[long[0]].fileid,
            )  # fmt: skip
        self.rows = [i for i in self.rows if manifest[i].num_samples <= max_samples]
        if not self.rows:
            raise ValueError(f"{manifest.source}: no utterance fits max_utterance_seconds")
        self.ids = [np.asarray(ids[i], dtype=np.int64) for i in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def num_samples(self, index: int) -> int:
        return self.manifest[self.rows[index]].num_samples

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        row = self.manifest[self.rows[key.index]]
        try:
            wav = row.read_audio(self.manifest.root)
        except Exception as e:  # noqa: BLE001 - any decoding failure skips the item
            log.warning("skipping unreadable audio %s (%s): %s", row.fileid, row.path, e)
            wav = None
        if wav is not None and len(wav) != row.num_samples:
            log.warning("skipping %s: %d samples, the manifest says %d", row.fileid, len(wav),
                        row.num_samples)  # fmt: skip
            wav = None
        return {"key": key, "wav": wav, "ids": self.ids[key.index]}


class UtteranceCollator:
    """Zero-pads whole utterances; a batch whose files all failed becomes a weightless
    stand-in (one silent second, no labels) so every rank runs the same collectives."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed  # ResumableLoader seeds its DataLoader with it

    def __call__(self, items: list[dict[str, Any]]) -> Batch:
        first = items[0]["key"]
        where = {"epoch": first.epoch, "position": first.position, "batch_id": first.batch}
        skipped = sum(it["wav"] is None for it in items)
        items = [it for it in items if it["wav"] is not None]
        real = bool(items)
        if not real:
            items = [{"key": first, "wav": np.zeros(16000, np.float32), "ids": np.zeros(0, int)}]
        lengths = [len(it["wav"]) for it in items]
        waveforms = torch.zeros(len(items), max(lengths))  # (batch, samples)
        longest = max(len(it["ids"]) for it in items)
        labels = torch.full((len(items), longest), -100, dtype=torch.long)
        for b, it in enumerate(items):
            waveforms[b, : lengths[b]] = torch.from_numpy(it["wav"])
            labels[b, : len(it["ids"])] = torch.from_numpy(it["ids"])
        return Batch(
            waveforms=waveforms,
            lengths=torch.tensor(lengths),
            frame_lengths=torch.tensor([num_frames(n) for n in lengths]),
            labels=[],
            mask=None,
            indices=[it["key"].index for it in items] if real else [],
            num_skipped=skipped,
            real=real,
            ctc_labels=labels,
            ctc_label_lengths=torch.tensor([len(it["ids"]) for it in items]),
            **where,
        )


def utterance_loader(
    dataset: UtteranceDataset,
    batch_samples: int,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> ResumableLoader:
    """Endless, resumable, length-bucketed CTC training batches of one rank."""
    lengths = [dataset.num_samples(i) for i in range(len(dataset))]
    sampler = BucketBatchSampler(
        lengths, batch_samples, seed=seed, shuffle=True, num_replicas=world_size, rank=rank
    )
    return ResumableLoader(
        dataset, sampler, UtteranceCollator(seed), num_workers=num_workers, pin_memory=pin_memory
    )


class UtteranceValidBatches:
    """The dev utterances in fixed length buckets, padded; batches that only pad a rank's
    share have `count` False."""

    def __init__(
        self,
        dataset: UtteranceDataset,
        batch_samples: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        max_batches: int = 0,
    ) -> None:
        self.dataset = dataset
        lengths = [dataset.num_samples(i) for i in range(len(dataset))]
        self.sampler = BucketBatchSampler(
            lengths, batch_samples, seed=VALID_SEED, shuffle=False, num_replicas=world_size,
            rank=rank,
        )  # fmt: skip
        self.max_batches = max_batches

    def __iter__(self) -> Iterator[Batch]:
        self.sampler.load_state_dict({"epoch": 0, "position": 0, "seed": VALID_SEED})
        num_real = self.sampler.num_batches
        if self.max_batches:
            num_real = min(num_real, self.max_batches)
        collate = UtteranceCollator(VALID_SEED)
        for keys in list(self.sampler):
            # Stop once every rank is past the cap (all ranks stop at the same position).
            if self.max_batches and keys[0].position * self.sampler.num_replicas >= num_real:
                break
            batch = collate([self.dataset[k] for k in keys])
            batch.count = keys[0].batch < num_real
            yield batch
