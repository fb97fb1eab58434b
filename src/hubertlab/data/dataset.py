"""Waveforms (with their units, when the task has any) for training: the Batch every task
receives, dataset, cropping collator (which draws the span mask of the `[mask]` table),
resumable loader.

Crops start at multiples of FRAME_HOP samples, so the first label of a crop starting at sample s
is unit s / 320 of the file: labels stay frame-exact (REFERENCE.md section 8). Every random
choice (crop start, mask) is seeded by (seed, epoch, item or batch): results do not depend on
which worker decoded what.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from hubertlab.constants import FRAME_HOP, RECEPTIVE_FIELD, num_frames
from hubertlab.data.manifest import Manifest
from hubertlab.data.masking import MaskConfig
from hubertlab.data.sampler import BucketBatchSampler, SampleKey
from hubertlab.data.speed import check_speeds, draw_speed, perturb_speed

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """What a collator hands the training loop and a task: the contract between them.

    Labels, mask and frame targets are on the frame grid of hubertlab.constants (frame k
    covers samples [320 k, 320 k + 400)); padded frames have label -1 and are never masked.
    Each task reads the fields it needs; the others stay None (or empty)."""

    waveforms: torch.Tensor  # (batch, samples) float32
    lengths: torch.Tensor  # (batch,) valid samples per row
    frame_lengths: torch.Tensor  # (batch,) valid frames per row
    labels: list[torch.Tensor]  # one (batch, frames) long tensor per unit set; -1: ignored
    mask: torch.Tensor | None  # (batch, frames) bool span mask, drawn once, by the collator
    epoch: int = 0
    position: int = 0  # index of the batch in this rank's list for the epoch
    batch_id: int = 0  # index in the epoch's global list (>= num_batches: rank padding)
    indices: list[int] = field(default_factory=list)  # dataset rows
    num_skipped: int = 0  # items that failed to decode
    real: bool = True  # False: a weightless stand-in for a batch whose files all failed
    count: bool = True  # validation: False for batches that only pad a rank's share
    # Frame classification (VTC): multi-label targets and the frames left out of the loss.
    frame_targets: torch.Tensor | None = None  # (batch, frames, classes) float in [0, 1]
    frame_ignore: torch.Tensor | None = None  # (batch, frames) bool; True: not scored
    # CTC: token ids padded with -100, and each row's count of real ones.
    ctc_labels: torch.Tensor | None = None  # (batch, longest) long
    ctc_label_lengths: torch.Tensor | None = None  # (batch,) long

    @property
    def size(self) -> int:
        return int(self.waveforms.shape[0])

    @property
    def num_masked(self) -> int:
        """Masked frames with a label (what HuBERT's and SpidR's losses are normalised by)."""
        if self.mask is None or not self.real:
            return 0
        if not self.labels:
            return int(self.mask.sum())
        return int((self.mask & (self.labels[0][:, : self.mask.shape[1]] >= 0)).sum())

    def to(self, device: torch.device, *, non_blocking: bool = False) -> Batch:
        def move(t: Any) -> Any:
            return t.to(device, non_blocking=non_blocking) if torch.is_tensor(t) else t

        return replace(
            self,
            waveforms=move(self.waveforms),
            lengths=move(self.lengths),
            frame_lengths=move(self.frame_lengths),
            labels=[move(t) for t in self.labels],
            mask=move(self.mask),
            frame_targets=move(self.frame_targets),
            frame_ignore=move(self.frame_ignore),
            ctc_labels=move(self.ctc_labels),
            ctc_label_lengths=move(self.ctc_label_lengths),
        )


class UnitDataset(torch.utils.data.Dataset):
    """Manifest rows joined with zero or more unit sets; __getitem__ takes a SampleKey.

    Rows without units in every set are dropped with a warning (never a crash in the middle of
    training); rows whose unit count differs from num_frames(num_samples) are an error, since it
    means the units were computed with another frame layout or on other audio."""

    def __init__(
        self,
        manifest: Manifest,
        unit_sets: Sequence[dict[str, np.ndarray]],
        *,
        min_samples: int = 0,
        unit_names: Sequence[str] = (),
        standardize: bool = False,
    ) -> None:
        names = list(unit_names) or [f"unit set {i}" for i in range(len(unit_sets))]
        self.manifest = manifest
        # Zero mean, unit variance per utterance (the whole file, before any crop), as the
        # models that expect it (SpidR, DinoSR, HuBERT large) were trained.
        self.standardize = standardize
        self.rows: list[int] = []
        missing, short = [], 0
        for i, row in enumerate(manifest):
            if row.num_samples < min_samples:
                short += 1
                continue
            if any(row.fileid not in units for units in unit_sets):
                missing.append(row.fileid)
                continue
            expected = num_frames(row.num_samples)
            for units, name in zip(unit_sets, names, strict=True):
                if len(units[row.fileid]) != expected:
                    raise ValueError(
                        f"{name}: {row.fileid!r} has {len(units[row.fileid])} units, expected "
                        f"{expected} (num_frames of {row.num_samples} samples in "
                        f"{manifest.source})"
                    )
            self.rows.append(i)
        if missing:
            log.warning(
                "%s: %d rows have no units and are skipped (first: %s)",
                manifest.source,
                len(missing),
                ", ".join(missing[:3]),
            )
        if short:
            log.info(
                "%s: %d rows shorter than %d samples skipped", manifest.source, short, min_samples
            )
        if not self.rows:
            raise ValueError(f"{manifest.source}: no usable rows (all too short or without units)")
        fileids = [manifest[i].fileid for i in self.rows]
        # int32 halves the memory of int64 labels; forked workers share these arrays.
        self.unit_sets = [
            {f: np.asarray(units[f], dtype=np.int32) for f in fileids} for units in unit_sets
        ]

    def __len__(self) -> int:
        return len(self.rows)

    def num_samples(self, index: int) -> int:
        return self.manifest[self.rows[index]].num_samples

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        """{"key", "wav", "units"}; "wav" is None when the audio cannot be decoded or no longer
        has the manifest's length (units made for other audio must not be trained on)."""
        row = self.manifest[self.rows[key.index]]
        failed = {"key": key, "wav": None, "units": [None] * len(self.unit_sets)}
        try:
            wav = row.read_audio(self.manifest.root, standardize=self.standardize)
        except Exception as e:  # noqa: BLE001 - any decoding failure skips the item
            log.warning("skipping unreadable audio %s (%s): %s", row.fileid, row.path, e)
            return failed
        if len(wav) != row.num_samples:
            log.warning(
                "skipping %s (%s): %d samples, the manifest %s says %d (the file changed since "
                "the manifest was made; rebuild it and its units)",
                row.fileid, row.path, len(wav), self.manifest.source, row.num_samples,
            )  # fmt: skip
            return failed
        return {"key": key, "wav": wav, "units": [u[row.fileid] for u in self.unit_sets]}


class CropCollator:
    """Crop (random, at multiples of 320 samples) and batch items; draw the span mask.
    With `speeds`, each item is first speed-perturbed by a factor drawn from them
    (hubertlab.data.speed), its units stretched alike.

    "crop": every item is cut to the shortest in the batch (capped at max_samples), no padding.
    "pad": every item is cut to max_samples at most, and padded with zeros to the longest.
    A batch whose files all failed to decode becomes a stand-in (`real` False): one silent row
    of `min_samples` with every label ignored, so every rank still runs the same collectives."""

    def __init__(
        self,
        *,
        max_samples: int,
        batching: str = "crop",
        seed: int = 0,
        mask: MaskConfig | None = None,
        random_crop: bool = True,
        min_samples: int = RECEPTIVE_FIELD,
        speeds: tuple[float, ...] = (),
    ) -> None:
        if batching not in ("crop", "pad"):
            raise ValueError(f"batching must be 'crop' or 'pad', got {batching!r}")
        check_speeds(speeds)
        self.speeds = tuple(speeds)
        self.max_samples = max_samples
        self.batching = batching
        self.seed = seed
        self.mask = mask
        self.random_crop = random_crop
        self.min_samples = max(min_samples, RECEPTIVE_FIELD)

    def crop_start(self, key: SampleKey, num_samples: int, target: int) -> int:
        """A start sample, multiple of FRAME_HOP, with start + target <= num_samples."""
        num_starts = (num_samples - target) // FRAME_HOP + 1
        if not self.random_crop:
            return 0
        rng = np.random.default_rng([self.seed, key.epoch, key.index])
        return FRAME_HOP * int(rng.integers(0, num_starts))

    def __call__(self, items: list[dict[str, Any]]) -> Batch:
        first = items[0]["key"]
        where = {"epoch": first.epoch, "position": first.position, "batch_id": first.batch}
        num_sets = len(items[0]["units"])
        num_skipped = sum(it["wav"] is None for it in items)
        items = [it for it in items if it["wav"] is not None]
        if not items:  # every file of the batch failed: a stand-in the loop gives no weight
            return self._stand_in(num_sets, num_skipped, where)
        if self.speeds:
            items = [self._speed_perturbed(it) for it in items]
        lengths = [min(len(it["wav"]), self.max_samples) for it in items]
        if self.batching == "crop":
            lengths = [min(lengths)] * len(items)
        width = max(lengths)
        width_frames = num_frames(width)
        wavs = torch.zeros(len(items), width)  # (batch, samples)
        # Padded frames get label -1: the model ignores negative ids.
        labels = [
            torch.full((len(items), width_frames), -1, dtype=torch.long) for _ in range(num_sets)
        ]
        for b, (it, n) in enumerate(zip(items, lengths, strict=True)):
            start = self.crop_start(it["key"], len(it["wav"]), n)
            wavs[b, :n] = torch.from_numpy(it["wav"][start : start + n])
            # Frame k of the crop is frame start / 320 + k of the file: exact, no rounding.
            offset, count = start // FRAME_HOP, num_frames(n)
            for s in range(num_sets):
                labels[s][b, :count] = torch.from_numpy(it["units"][s][offset : offset + count])
        frame_lengths = torch.tensor([num_frames(n) for n in lengths])
        return Batch(
            waveforms=wavs,
            lengths=torch.tensor(lengths),
            frame_lengths=frame_lengths,
            labels=labels,
            mask=self._mask(frame_lengths, width_frames, first),
            indices=[it["key"].index for it in items],
            num_skipped=num_skipped,
            **where,
        )

    def _speed_perturbed(self, item: dict[str, Any]) -> dict[str, Any]:
        key = item["key"]
        factor = draw_speed(self.speeds, self.seed, key.epoch, key.index)
        wav, units = perturb_speed(item["wav"], item["units"], factor)
        return {**item, "wav": wav, "units": units}

    def _mask(self, frame_lengths: torch.Tensor, width: int, key: SampleKey) -> torch.Tensor | None:
        """The batch's span mask, a function of the batch identity alone: any rank layout and
        any worker draw the same one."""
        if self.mask is None:
            return None
        generator = torch.Generator().manual_seed(mask_seed(self.seed, key))
        return self.mask.draw(frame_lengths, generator, width)

    def _stand_in(self, num_sets: int, num_skipped: int, where: dict[str, int]) -> Batch:
        frames = num_frames(self.min_samples)
        return Batch(
            waveforms=torch.zeros(1, self.min_samples),
            lengths=torch.tensor([self.min_samples]),
            frame_lengths=torch.tensor([frames]),
            labels=[torch.full((1, frames), -1, dtype=torch.long) for _ in range(num_sets)],
            mask=None if self.mask is None else torch.zeros(1, frames, dtype=torch.bool),
            num_skipped=num_skipped,
            real=False,
            **where,
        )


def mask_seed(seed: int, key: SampleKey) -> int:
    """A 63-bit seed for the mask of the batch `key` belongs to."""
    return int(np.random.SeedSequence([seed, key.epoch, key.batch, 7]).generate_state(1)[0])


class ResumableLoader:
    """Endless iterator over batches (epoch after epoch) that knows what was consumed.

    DataLoader workers read ahead of the training loop; the state saved in a checkpoint is the
    position just after the last batch the loop took, so a resume repeats nothing and skips
    nothing."""

    def __init__(
        self,
        dataset: UnitDataset,
        sampler: BucketBatchSampler,
        collate: CropCollator,
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        self.dataset = dataset
        self.sampler = sampler
        self.collate = collate
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self._state = sampler.state_dict()

    def epoch_loader(self) -> DataLoader:
        return DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            # Its own generator: creating an iterator must not draw from the global torch RNG
            # (dropout uses it, and a resumed run must see the same stream).
            generator=torch.Generator().manual_seed(self.collate.seed),
            multiprocessing_context="fork" if self.num_workers > 0 and _can_fork() else None,
        )

    def __iter__(self) -> Iterator[Batch]:
        self.sampler.load_state_dict(self._state)
        loader = self.epoch_loader()
        while True:  # each pass over the DataLoader is one epoch of the sampler
            for batch in loader:
                self._state = {
                    "epoch": batch.epoch,
                    "position": batch.position + 1,
                    "seed": self.sampler.seed,
                }
                yield batch
            self._state = self.sampler.state_dict()

    def state_dict(self) -> dict[str, int]:
        return dict(self._state)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)
        self._state = self.sampler.state_dict()


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()
