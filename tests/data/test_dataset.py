"""Dataset + cropping collator + resumable loader: labels stay frame-exact after a crop."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from hubertlab.constants import FRAME_HOP, num_frames
from hubertlab.data.dataset import (
    CropCollator,
    ResumableLoader,
    UnitDataset,
)
from hubertlab.data.manifest import read_manifest
from hubertlab.data.masking import MaskConfig
from hubertlab.data.sampler import BucketBatchSampler, SampleKey
from hubertlab.units.assign import read_units
from tests.train_fixtures import NUM_UNITS, make_corpus

SECONDS = [1.0, 1.5, 0.8, 2.0, 1.2, 0.6, 1.7, 0.9]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("ds"), SECONDS, corrupt=(2,))


def dataset_from(corpus, **kwargs):
    manifest, units = corpus
    return UnitDataset(read_manifest(manifest), [read_units(units)], **kwargs)


def loader(corpus, *, num_workers=0, batching="crop", seed=0, world=1, rank=0):
    ds = dataset_from(corpus)
    lengths = [min(ds.num_samples(i), 16000) for i in range(len(ds))]
    sampler = BucketBatchSampler(lengths, 32000, seed=seed, num_replicas=world, rank=rank)
    collate = CropCollator(max_samples=16000, batching=batching, seed=seed, mask=MaskConfig())
    return ResumableLoader(ds, sampler, collate, num_workers=num_workers)


def take(it, n):
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("batching", ["crop", "pad"])
def test_labels_line_up_with_the_cropped_frames(corpus, batching):
    """Units encode time (unit = frame index mod K): label k of a crop starting at sample s is
    frame s / 320 + k of the file, and the crop's samples are the file's samples from s."""
    ds = dataset_from(corpus)
    collate = CropCollator(max_samples=12000, batching=batching, seed=7)
    keys = [SampleKey(0, 0, 0, i) for i in range(len(ds)) if i != 2]  # 2 is corrupt
    batch = collate([ds[k] for k in keys])
    assert batch.size == len(keys)
    for b, key in enumerate(keys):
        item = ds[key]
        n = int(batch.lengths[b])
        wav = batch.waveforms[b, :n].numpy()
        # Find the crop start in the file: it must be a multiple of 320 samples.
        starts = [
            s
            for s in range(0, len(item["wav"]) - n + 1, FRAME_HOP)
            if np.array_equal(item["wav"][s : s + n], wav)
        ]
        assert starts, "crop does not start at a multiple of 320 samples"
        frames = num_frames(n)
        labels = batch.labels[0][b]
        expected = (starts[0] // FRAME_HOP + np.arange(frames)) % NUM_UNITS
        assert labels[:frames].tolist() == expected.tolist()
        assert (labels[frames:] == -1).all()  # padding is ignored by the model
        assert int(batch.frame_lengths[b]) == frames
    if batching == "crop":
        assert len(set(batch.lengths.tolist())) == 1
        assert int(batch.lengths[0]) == min(min(len(ds[k]["wav"]) for k in keys), 12000)
    else:
        assert batch.waveforms.shape[1] == max(batch.lengths.tolist())


def test_crops_and_masks_do_not_depend_on_workers(corpus):
    a = take(iter(loader(corpus, num_workers=0)), 6)
    b = take(iter(loader(corpus, num_workers=2)), 6)
    for x, y in zip(a, b, strict=True):
        assert x.indices == y.indices
        assert torch.equal(x.waveforms, y.waveforms)
        assert torch.equal(x.mask, y.mask)
        assert x.num_masked == int(x.mask.sum()) > 0


def test_resumed_loader_repeats_and_skips_nothing(corpus):
    reference = take(iter(loader(corpus, num_workers=1)), 12)
    first = loader(corpus, num_workers=1)
    it = iter(first)
    take(it, 5)  # workers have read ahead by now; the state is what was consumed
    state = json.loads(json.dumps(first.state_dict()))
    resumed = loader(corpus, num_workers=1)
    resumed.load_state_dict(state)
    rest = take(iter(resumed), 7)
    for x, y in zip(reference[5:], rest, strict=True):
        assert (x.epoch, x.batch_id, x.indices) == (y.epoch, y.batch_id, y.indices)
        assert torch.equal(x.waveforms, y.waveforms)


def test_corrupt_audio_is_skipped_logged_and_counted(corpus, caplog):
    with caplog.at_level(logging.WARNING, logger="hubertlab.data.dataset"):
        batches = take(iter(loader(corpus)), 20)
    skipped = sum(b.num_skipped for b in batches)
    assert skipped >= 2  # the file is in every epoch
    assert "skipping unreadable audio spk0/utt002" in caplog.text
    assert all(2 not in b.indices for b in batches)


def test_audio_changed_since_the_manifest_is_skipped_not_trained_on(tmp_path, caplog):
    """A file replaced by a shorter one after the manifest was written: its units describe other
    audio, so the item is skipped and logged like a corrupt file (never cut to fit)."""
    from hubertlab.data.audio import write_audio

    manifest, units = make_corpus(tmp_path, [1.0, 1.2])
    ds = UnitDataset(read_manifest(manifest), [read_units(units)])
    write_audio(tmp_path / "train" / "wav" / "spk1" / "utt001.wav", np.zeros(8000, np.float32))
    with caplog.at_level(logging.WARNING, logger="hubertlab.data.dataset"):
        item = ds[SampleKey(0, 0, 0, 1)]
    assert item["wav"] is None and "spk1/utt001" in caplog.text and "8000 samples" in caplog.text
    assert ds[SampleKey(0, 0, 0, 0)]["wav"] is not None
    batch = CropCollator(max_samples=16000, mask=MaskConfig())([ds[SampleKey(0, 0, 0, 1)]])
    assert not batch.real and batch.num_skipped == 1 and batch.num_masked == 0


def test_rows_without_units_are_dropped_and_wrong_counts_fail(corpus, caplog):
    manifest, units_path = corpus
    units = read_units(units_path)
    rows = read_manifest(manifest)
    partial = {k: v for k, v in units.items() if k != "spk1/utt001"}
    with caplog.at_level(logging.WARNING):
        ds = UnitDataset(rows, [partial])
    assert len(ds) == len(rows) - 1 and "spk1/utt001" in caplog.text
    bad = dict(units, **{"spk1/utt003": units["spk1/utt003"][:-1]})
    with pytest.raises(ValueError, match="spk1/utt003.*expected"):
        UnitDataset(rows, [bad])


def test_short_files_are_left_out(corpus):
    ds = dataset_from(corpus, min_samples=16000)
    assert all(ds.num_samples(i) >= 16000 for i in range(len(ds)))
    assert len(ds) == sum(s >= 1.0 for s in SECONDS)


def test_tar_members_load_like_files(corpus, tmp_path):
    import tarfile

    from hubertlab.data.manifest import write_manifest
    from hubertlab.data.scan import scan_tar

    manifest, units = corpus
    rows = read_manifest(manifest)
    archive = tmp_path / "audio.tar"
    with tarfile.open(archive, "w") as tar:
        for row in rows:
            if row.fileid != "spk0/utt002":  # the corrupt one
                tar.add(rows.root / row.path, arcname=row.path.removeprefix("wav/"))
    write_manifest(scan_tar(archive).rows, tmp_path / "tar.csv")
    from_tar = UnitDataset(read_manifest(tmp_path / "tar.csv"), [read_units(units)])
    from_files = dataset_from(corpus)
    assert from_tar.manifest[0].archive == "audio.tar"
    for i in range(len(from_tar)):
        key = SampleKey(0, 0, 0, i)
        fileid = from_tar.manifest[from_tar.rows[i]].fileid
        j = next(
            j
            for j in range(len(from_files))
            if from_files.manifest[from_files.rows[j]].fileid == fileid
        )
        np.testing.assert_array_equal(
            from_tar[key]["wav"], from_files[SampleKey(0, 0, 0, j)]["wav"]
        )
