"""Audio training and validation batches from the [data] section of a TrainConfig: crops,
length buckets, the span mask drawn once per batch, and the unit sets a task asks for (none for
self-distillation)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hubertlab.data.dataset import CropCollator, ResumableLoader, UnitDataset
from hubertlab.data.manifest import read_manifest
from hubertlab.data.masking import MaskConfig
from hubertlab.data.sampler import BucketBatchSampler
from hubertlab.data.stream import expand_shards
from hubertlab.data.stream_loader import StreamBatches
from hubertlab.data.valid import VALID_SEED, ValidBatches
from hubertlab.units.assign import read_units

if TYPE_CHECKING:  # the [data] section of a TrainConfig; read for its attributes only
    from hubertlab.train.config import DataSection


def load_dataset(
    manifest: Path,
    unit_files: Sequence[Path],
    min_samples: int,
    *,
    standardize: bool = False,
    num_units: Sequence[int] = (),
) -> UnitDataset:
    """The manifest's audio with its unit sets; every unit id must be below its set's k
    (`num_units`, [data] num_units) or a ValueError names the file and fileid."""
    rows = read_manifest(manifest)
    # JSONL units, or fairseq .km files whose lines follow the manifest's rows.
    unit_sets = [read_units(p, rows) for p in unit_files]
    for path, units, k in zip(unit_files, unit_sets, num_units, strict=False):
        for fileid, ids in units.items():
            if len(ids) and int(ids.max()) >= k:
                raise ValueError(
                    f"{path}: {fileid}: unit {int(ids.max())} is not below data.num_units "
                    f"= {k} (a units file of another k-means?)"
                )
    return UnitDataset(
        rows,
        unit_sets,
        min_samples=min_samples,
        unit_names=[str(p) for p in unit_files],
        standardize=standardize,
    )


def train_collator(data: DataSection, mask: MaskConfig | None, seed: int) -> CropCollator:
    """Crops, batching and the span mask of the training batches, files or shards alike."""
    return CropCollator(
        max_samples=data.max_samples,
        batching=data.batching,
        seed=seed,
        mask=mask,
        min_samples=data.min_samples,
        speeds=data.speed_perturb,
    )


def build_train_loader(
    data: DataSection,
    unit_files: Sequence[Path],
    mask: MaskConfig | None,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    standardize: bool = False,
) -> ResumableLoader:
    """Endless, resumable batches of this rank (see ResumableLoader), labelled with
    `unit_files` (none: audio only) and masked as `mask` says (None: no mask); with
    `standardize`, every utterance is scaled to zero mean and unit variance when read."""
    dataset = load_dataset(
        data.train_manifest,
        unit_files,
        data.min_samples,
        standardize=standardize,
        num_units=data.num_units,
    )
    lengths = [min(dataset.num_samples(i), data.max_samples) for i in range(len(dataset))]
    sampler = BucketBatchSampler(
        lengths, data.batch_samples, seed=seed, shuffle=True, num_replicas=world_size, rank=rank
    )
    collate = train_collator(data, mask, seed)
    return ResumableLoader(
        dataset, sampler, collate, num_workers=data.num_workers, pin_memory=pin_memory
    )


def build_stream_loader(
    data: DataSection,
    num_unit_sets: int,
    mask: MaskConfig | None,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    standardize: bool = False,
) -> StreamBatches:
    """Endless, resumable batches of this rank streamed from data.train_shards (see
    hubertlab.data.stream), with the shards' units (num_unit_sets 1) or none (0); with
    `standardize`, every utterance is scaled to zero mean and unit variance when decoded."""
    collate = train_collator(data, mask, seed)
    return StreamBatches(
        expand_shards(data.train_shards),
        collate,
        batch_samples=data.batch_samples,
        num_unit_sets=num_unit_sets,
        num_units=data.num_units[0] if num_unit_sets and data.num_units else None,
        buffer_size=data.shuffle_buffer,
        rank=rank,
        world_size=world_size,
        num_workers=data.num_workers,
        pin_memory=pin_memory,
        standardize=standardize,
    )


def pretraining_batches(
    cfg, mask: MaskConfig | None, *, units: bool, rank: int, world_size: int, pin_memory: bool,
    standardize: bool = False,
):  # fmt: skip
    """The training batches of a pretraining run: streamed from [data] train_shards, or read
    from the manifest's files; labelled with the data's units (`units`) or none."""
    data = cfg.data
    common = dict(seed=cfg.run.seed, rank=rank, world_size=world_size, pin_memory=pin_memory,
                  standardize=standardize)  # fmt: skip
    if data.train_shards is not None:  # at most one unit set, in the shards' JSON
        return build_stream_loader(data, len(data.num_units) if units else 0, mask, **common)
    return build_train_loader(data, data.train_units if units else (), mask, **common)


def pretraining_valid_batches(
    cfg, mask: MaskConfig | None, *, units: bool, rank: int, world_size: int,
    standardize: bool = False,
) -> ValidBatches | None:  # fmt: skip
    """The validation batches of a pretraining run (None without [data] valid_manifest): its
    utterances cropped and masked the same way every time (data.valid)."""
    data = cfg.data
    if data.valid_manifest is None:
        return None
    dataset = load_dataset(
        data.valid_manifest,
        data.valid_units if units else (),
        data.min_samples,
        standardize=standardize,
        num_units=data.num_units,
    )
    lengths = [min(dataset.num_samples(i), data.max_samples) for i in range(len(dataset))]
    collate = CropCollator(
        max_samples=data.max_samples,
        batching="pad",
        seed=VALID_SEED,
        mask=mask,
        min_samples=data.min_samples,
    )
    return ValidBatches(
        dataset, lengths, data.batch_samples, collate, rank=rank, world_size=world_size,
        max_batches=data.max_valid_batches, num_workers=data.num_workers,
    )  # fmt: skip
