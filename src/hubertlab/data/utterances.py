"""CTC training batches, as the training loop takes them (data.dataset.Batch): whole
utterances (never cropped: the transcript must match the audio), zero-padded, in length
buckets (data.sampler.BucketBatchSampler), endless and resumable for training
(data.dataset.ResumableLoader), fixed for validation (data.valid.ValidBatches).
Batch.ctc_labels (batch, longest) int64 padded with -100, Batch.ctc_label_lengths (batch,).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from hubertlab.constants import RECEPTIVE_FIELD, SAMPLE_RATE, num_frames
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
from hubertlab.data.valid import VALID_SEED, ValidBatches

log = logging.getLogger(__name__)


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
                manifest.source, len(long), max_samples / SAMPLE_RATE, manifest[long[0]].fileid,
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
            items = [
                {"key": first, "wav": np.zeros(SAMPLE_RATE, np.float32), "ids": np.zeros(0, int)}
            ]
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


def utterance_valid_batches(
    dataset: UtteranceDataset,
    batch_samples: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    max_batches: int = 0,
) -> ValidBatches:
    """The dev utterances in fixed length buckets, padded (see ValidBatches)."""
    lengths = [dataset.num_samples(i) for i in range(len(dataset))]
    return ValidBatches(
        dataset, lengths, batch_samples, UtteranceCollator(VALID_SEED), rank=rank,
        world_size=world_size, max_batches=max_batches,
    )  # fmt: skip
