"""Endless, resumable training batches streamed from WebDataset tar shards (hubertlab shard).

Who reads what. The shards are split over (rank, DataLoader worker) *slots*: slot
s = worker * world_size + rank, S = world_size * max(num_workers, 1) slots. Every epoch the
shard list is permuted with (seed, epoch) and the shard at position i of that order goes to slot
i % S (WebDataset's split_by_node, then split_by_worker): each rank reads its own shards. With
fewer shards than slots (N < S), the slots s, s + N, s + 2N, ... share shard order[s % N] and
each keeps every m-th sample of it (m = how many slots share it): every sample is still read
once per epoch, by one slot, at the price of each sharer scanning (not decoding) the whole shard.
With N >= S and N % S != 0 some slots read one shard more per epoch than others; since the
stream is endless, that only changes how often a slot's epoch turns over.

Within a slot: samples pass through a shuffle buffer (`buffer_size` raw samples, FLAC bytes
not decoded audio: 1000 samples of 10 s are ~200 MB; UPS uses 5,000) and are decoded as they
leave it, then grouped greedily into batches under the audio budget (count x longest crop
<= batch_samples, as BucketBatchSampler does; a stream cannot sort by length) and collated by
CropCollator (crop starts on the 320-sample grid, the mask drawn once per batch). Epochs follow
each other without a break: the buffer carries samples of one epoch into the next.

What resumes. A slot's state (epoch, shard position in the epoch, samples read of that shard,
the buffer and the sample carried into the next batch as (epoch, shard position, sample ordinal)
references, the buffer's RNG state, batches made) is small and plain: a resume re-reads the
referenced samples and continues exactly.

A sample that does not decode (bad FLAC or JSON, a missing member, a length that differs from
its JSON's num_samples) is skipped, logged and counted in the batch (Batch.num_skipped); a
truncated shard is reported and its members before the damage are read. Units that do not fit
the audio (count != num_frames(num_samples)) or are missing when the task needs them are an
error naming the shard and key: they were made for other audio or the shards without --units.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from hubertlab.constants import num_frames
from hubertlab.data.audio import standardize_waveform
from hubertlab.data.dataset import Batch, CropCollator
from hubertlab.data.sampler import SampleKey
from hubertlab.data.tar_shards import SHARD_PATTERN, decode_sample, iter_samples
from hubertlab.unit_ids import unit_ids

log = logging.getLogger(__name__)

DEFAULT_SHUFFLE_BUFFER = 1000
_SHARD_ORDER, _BUFFER_RNG = 11, 13  # stream tags of the two seeded RNGs

Ref = tuple[int, int, int]  # (epoch, position of the shard in the slot's epoch, sample ordinal)


def is_url(spec: str) -> bool:
    return "://" in spec or spec.startswith("pipe:")


def expand_shards(spec: str) -> list[str]:
    """The shards of `spec`: a `hubertlab shard` folder, a path or URL, or a brace pattern of
    either ("shards/shard-{000000..000031}.tar"). Local shards must exist."""
    from braceexpand import braceexpand  # lazy: optional, comes with webdataset (curate)

    spec = str(spec).strip()
    if not spec:
        raise ValueError("no shards given (empty train_shards)")
    if not is_url(spec) and Path(spec).is_dir():
        done = Path(spec) / "shards.json"  # written last by `hubertlab shard`
        if not done.is_file():
            raise FileNotFoundError(
                f"{spec}: no shards.json (not a finished `hubertlab shard` folder); name other "
                "shards with a pattern, e.g. 'folder/shard-{000000..000031}.tar'"
            )
        num_shards = int(json.loads(done.read_text(encoding="utf-8"))["num_shards"])
        spec = str(Path(spec) / SHARD_PATTERN.format(0))
        if num_shards > 1:
            spec = spec.replace("000000", f"{{000000..{num_shards - 1:06d}}}")
    urls = list(braceexpand(spec))
    for url in urls:
        if not is_url(url) and not Path(url).is_file():
            raise FileNotFoundError(f"shard not found: {url} (from {spec!r})")
    if len(set(urls)) != len(urls):
        raise ValueError(f"{spec!r}: names a shard twice")
    return urls


def open_shard(url: str) -> BinaryIO:
    """A binary stream of one shard: a local file, or what webdataset's gopen opens (http(s),
    pipe:, s3 through its command-line tools...)."""
    if not is_url(url):
        return open(url, "rb")
    from webdataset import gopen  # lazy: optional (hubertlab[curate]), URLs only

    return gopen(url, "rb")


def slot_work(num_shards: int, slot: int, num_slots: int, *, seed: int, epoch: int):
    """(shard index, stride, offset) to read in `epoch` by `slot`, in order: keep the samples
    of the shard whose ordinal % stride == offset (see the module docstring)."""
    order = np.random.default_rng([seed, epoch, _SHARD_ORDER]).permutation(num_shards)
    if num_shards >= num_slots:
        return [(int(order[i]), 1, 0) for i in range(slot, num_shards, num_slots)]
    shared = slot % num_shards
    sharers = len(range(shared, num_slots, num_shards))
    return [(int(order[shared]), sharers, slot // num_shards)]


class SlotStream:
    """The endless batches of one (rank, worker) slot; `state_dict()` after a batch restores
    (with `state`) a stream that continues with exactly the next batches."""

    def __init__(
        self,
        urls: list[str],
        collate: CropCollator,
        *,
        slot: int,
        num_slots: int,
        seed: int,
        buffer_size: int,
        batch_samples: int,
        num_unit_sets: int,
        state: dict[str, Any] | None = None,
        standardize: bool = False,
        num_units: int | None = None,
    ) -> None:
        self.urls, self.collate = urls, collate
        self.num_units = num_units  # unit ids must be below it (None: any integer >= 0)
        self.slot, self.num_slots, self.seed = slot, num_slots, seed
        self.buffer_size, self.batch_samples = buffer_size, batch_samples
        self.num_unit_sets = num_unit_sets
        # Zero mean, unit variance per utterance (before any crop), as the file loader does.
        self.standardize = standardize
        seq = np.random.SeedSequence([seed, slot, num_slots, _BUFFER_RNG])
        self.rng = np.random.Generator(np.random.PCG64(seq))
        self.epoch = self.position = self.sample = self.batches = 0
        self.buffer: list[tuple[Ref, dict]] = []  # raw samples
        self.carry: list[tuple[Ref, dict]] = []  # the decoded first item of the next batch
        self._work: dict[int, list[tuple[int, int, int]]] = {}
        self._reader: Iterator[tuple[int, dict]] | None = None
        self._epoch_items = 0
        if state is not None:
            self._load(state)

    # ------------------------------------------------------------------ reading
    def work(self, epoch: int) -> list[tuple[int, int, int]]:
        if epoch not in self._work:
            if len(self._work) > 64:  # recomputed when needed again: only a cache
                self._work.pop(min(self._work))
            self._work[epoch] = slot_work(
                len(self.urls), self.slot, self.num_slots, seed=self.seed, epoch=epoch
            )
        return self._work[epoch]

    def _samples(self, shard: int, first: int) -> Iterator[tuple[int, dict]]:
        """(ordinal, raw sample) of one shard from ordinal `first` on."""
        url = self.urls[shard]
        with open_shard(url) as stream:
            for ordinal, parts in enumerate(iter_samples(stream, name=url)):
                if ordinal >= first:
                    yield ordinal, parts

    def _next_raw(self) -> tuple[Ref, dict]:
        """The next sample of this slot, in shard order, epoch after epoch."""
        while True:
            work = self.work(self.epoch)
            if self.position >= len(work):
                if self._epoch_items == 0:
                    raise ValueError(
                        f"slot {self.slot} of {self.num_slots} found no sample in epoch "
                        f"{self.epoch} (shards {[self.urls[w[0]] for w in work]}): empty or "
                        "unreadable shards"
                    )
                self.epoch, self.position, self.sample, self._epoch_items = self.epoch + 1, 0, 0, 0
                continue
            shard, stride, offset = work[self.position]
            if self._reader is None:
                self._reader = self._samples(shard, self.sample)
            for ordinal, parts in self._reader:
                self.sample = ordinal + 1
                if ordinal % stride == offset:
                    self._epoch_items += 1
                    return (self.epoch, self.position, ordinal), parts
            self._reader, self.position, self.sample = None, self.position + 1, 0

    def _next_shuffled(self) -> tuple[Ref, dict]:
        while len(self.buffer) < self.buffer_size:
            self.buffer.append(self._next_raw())
        incoming = self._next_raw()
        if not self.buffer:
            return incoming
        j = int(self.rng.integers(len(self.buffer)))
        out, self.buffer[j] = self.buffer[j], incoming
        return out

    # ------------------------------------------------------------------ batches
    def _decode(self, ref: Ref, parts: dict) -> dict | None:
        """{"wav", "units"} of a raw sample, None when it does not decode (logged)."""
        url = self.urls[self.work(ref[0])[ref[1]][0]]
        try:
            sample = decode_sample(parts, url)
            if sample.get("num_samples") != len(sample["audio"]):
                raise ValueError(
                    f"{url}: {sample['key']}.flac has {len(sample['audio'])} samples, its JSON "
                    f"says {sample.get('num_samples')}"
                )
        except ValueError as e:
            log.warning("skipping a corrupt sample: %s", e)
            return None
        units = []
        if self.num_unit_sets:
            expected = num_frames(len(sample["audio"]))
            if "units" not in sample:
                raise ValueError(
                    f"{url}: {sample['key']}.json has no units; the task needs them (make the "
                    "shards with `hubertlab shard --units`)"
                )
            ids = unit_ids(sample["units"], f"{url}: {sample['key']}.json", self.num_units)
            if len(ids) != expected:
                raise ValueError(
                    f"{url}: {sample['key']} has {len(ids)} units, expected "
                    f"{expected} (num_frames of {len(sample['audio'])} samples)"
                )
            units = [ids]
        wav = standardize_waveform(sample["audio"]) if self.standardize else sample["audio"]
        return {"wav": wav, "units": units}

    def _uid(self, ref: Ref) -> int:
        """An id of the sample (shard, ordinal), the same in every epoch and slot."""
        return (self.work(ref[0])[ref[1]][0] << 32) | ref[2]

    def next_batch(self) -> Batch:
        """The next batch: items under the audio budget, corrupt ones counted as skipped."""
        items, failed = self.carry, []
        self.carry = []
        while True:
            ref, parts = self._next_shuffled()
            item = self._decode(ref, parts)
            if item is None:
                failed.append((ref, {"wav": None, "units": [None] * self.num_unit_sets}))
                continue
            if len(item["wav"]) < self.collate.min_samples:
                continue  # too short to crop (min_crop_seconds), as the file loader drops it
            longest = max(min(len(it["wav"]), self.collate.max_samples)
                          for it in [item] + [it for _, it in items])  # fmt: skip
            if items and (len(items) + 1) * longest > self.batch_samples:
                self.carry = [(ref, item)]
                break
            items.append((ref, item))
        batch_id = self.batches * self.num_slots + self.slot  # unique over slots: mask seeds
        keyed = [
            {**item, "key": SampleKey(ref[0], self.batches, batch_id, self._uid(ref))}
            for ref, item in items + failed
        ]
        self.batches += 1
        return self.collate(keyed)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        rng = self.rng.bit_generator.state
        return {
            "slot": self.slot, "num_slots": self.num_slots, "num_shards": len(self.urls),
            "seed": self.seed, "epoch": self.epoch, "position": self.position,
            "sample": self.sample, "batches": self.batches,
            "buffer": [list(ref) for ref, _ in self.buffer],
            "carry": [list(ref) for ref, _ in self.carry],
            "rng": {"state": str(rng["state"]["state"]), "inc": str(rng["state"]["inc"]),
                    "has_uint32": int(rng["has_uint32"]), "uinteger": int(rng["uinteger"])},
        }  # fmt: skip

    def _load(self, state: dict[str, Any]) -> None:
        mine = (self.slot, self.num_slots, len(self.urls), self.seed)
        saved = tuple(state[k] for k in ("slot", "num_slots", "num_shards", "seed"))
        if saved != mine:
            raise ValueError(
                f"stream state of (slot, slots, shards, seed) {saved} does not fit {mine}"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.sample, self.batches = int(state["sample"]), int(state["batches"])
        self._epoch_items = 1  # resumed inside an epoch that has given samples
        rng = state["rng"]
        self.rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(rng["state"]), "inc": int(rng["inc"])},
            "has_uint32": rng["has_uint32"], "uinteger": rng["uinteger"],
        }  # fmt: skip
        buffer_refs = [tuple(r) for r in state["buffer"]]
        carry_refs = [tuple(r) for r in state["carry"]]
        parts = self._reread(buffer_refs + carry_refs)
        self.buffer = [(ref, parts[ref]) for ref in buffer_refs]
        for ref in carry_refs:
            item = self._decode(ref, parts[ref])
            if item is None:
                raise ValueError(f"stream state: sample {ref} decoded before, not now")
            self.carry.append((ref, item))

    def _reread(self, refs: list[Ref]) -> dict[Ref, dict]:
        """The raw samples `refs` point at, read again from their shards."""
        wanted: dict[tuple[int, int], set[int]] = defaultdict(set)
        for epoch, position, ordinal in refs:
            wanted[(epoch, position)].add(ordinal)
        found: dict[Ref, dict] = {}
        for (epoch, position), ordinals in sorted(wanted.items()):
            shard = self.work(epoch)[position][0]
            for ordinal, parts in self._samples(shard, 0):
                if ordinal in ordinals:
                    found[(epoch, position, ordinal)] = parts
                if ordinal >= max(ordinals):
                    break
            missing = sorted(ordinals - {o for e, p, o in found if (e, p) == (epoch, position)})
            if missing:
                raise ValueError(
                    f"{self.urls[shard]}: samples {missing[:3]} of the saved stream state are "
                    "gone (the shard changed since the checkpoint)"
                )
        return found
