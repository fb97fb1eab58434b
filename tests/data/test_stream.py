"""Streaming batches from tar shards: who reads what, exact resume (with workers), damage."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from hubertlab.curate.shards import write_shards
from hubertlab.data.dataset import CropCollator
from hubertlab.data.manifest import read_manifest
from hubertlab.data.masking import MaskConfig
from hubertlab.data.stream import SlotStream, expand_shards, slot_work
from hubertlab.data.stream_loader import StreamBatches, StreamError
from hubertlab.data.tar_shards import iter_samples, read_shard
from hubertlab.units.assign import read_units
from tests.train_fixtures import make_corpus

SECONDS = [1.0, 1.5, 0.8, 2.0, 1.2, 0.6, 1.7, 0.9] * 3


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream")
    manifest, units = make_corpus(root, SECONDS)
    rows = read_manifest(manifest)
    write_shards(rows, root / "shards", 5, units=read_units(units, rows))
    return root / "shards"


def stream(urls, *, workers: int = 0, units: int = 1, buffer: int = 6, **kw) -> StreamBatches:
    collate = CropCollator(max_samples=16000, seed=3, mask=MaskConfig(), min_samples=8000)
    return StreamBatches(urls, collate, batch_samples=32000, num_unit_sets=units,
                         buffer_size=buffer, num_workers=workers, **kw)  # fmt: skip


def fingerprint(batch) -> tuple:
    labels = tuple(tuple(t.flatten().tolist()) for t in batch.labels)
    return (batch.epoch, batch.batch_id, tuple(batch.indices), batch.waveforms.sum().item(),
            batch.mask.sum().item(), labels, batch.num_skipped)  # fmt: skip


def take(batches, n: int) -> list[tuple]:
    it = iter(batches)
    return [fingerprint(next(it)) for _ in range(n)]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_stream_yields_exactly_the_batches_of_an_uninterrupted_one(shards, workers):
    urls = expand_shards(str(shards))
    full = take(stream(urls, workers=workers), 40)  # several epochs of 24 samples
    first = stream(urls, workers=workers)
    head = take(first, 17)  # an odd count: the other worker is due next
    state = first.state_dict()
    assert state["next_worker"] == (17 % workers if workers else 0)
    resumed = stream(urls, workers=workers)
    resumed.load_state_dict(state)
    assert head + take(resumed, 23) == full
    assert len({f[1] for f in full}) == 40  # distinct batch ids: distinct masks
    assert {f[0] for f in full} >= {0, 1, 2}


def test_brace_patterns_and_pipe_urls_stream_the_same_batches(shards, tmp_path):
    folder = take(stream(expand_shards(str(shards))), 8)
    pattern = expand_shards(str(shards / "shard-{000000..000004}.tar"))
    assert take(stream(pattern), 8) == folder
    piped = [f"pipe:cat {u}" for u in pattern]  # read through webdataset's gopen
    assert take(stream(piped), 8) == folder
    with pytest.raises(FileNotFoundError, match="shard-000005.tar"):
        expand_shards(str(shards / "shard-{000004..000009}.tar"))
    (tmp_path / "shard-000000.tar").write_bytes((shards / "shard-000000.tar").read_bytes())
    with pytest.raises(FileNotFoundError, match="no shards.json"):  # unfinished folder
        expand_shards(str(tmp_path))


@pytest.mark.parametrize("num_shards, world, workers", [(5, 2, 2), (3, 2, 2), (1, 1, 3)])
def test_every_sample_is_read_once_per_epoch_by_one_slot(shards, num_shards, world, workers):
    urls = expand_shards(str(shards))[:num_shards]
    sizes = [sum(1 for _ in iter_samples(u)) for u in urls]
    slots = world * workers
    for epoch in (0, 1):
        seen = Counter()
        for slot in range(slots):
            for shard, stride, offset in slot_work(len(urls), slot, slots, seed=0, epoch=epoch):
                seen.update((shard, o) for o in range(sizes[shard]) if o % stride == offset)
        assert set(seen.values()) == {1} and len(seen) == sum(sizes)
    # The shard order changes from epoch to epoch, and slot s of rank r reads only its own.
    orders = {tuple(w[0] for s in range(slots) for w in slot_work(5, s, slots, seed=0, epoch=e))
              for e in range(4)}  # fmt: skip
    assert len(orders) > 1


def test_slots_of_a_rank_and_worker_read_their_own_shards(shards):
    urls = expand_shards(str(shards))
    raw = SlotStream(urls, CropCollator(max_samples=16000), slot=1, num_slots=4, seed=0,
                     buffer_size=0, batch_samples=32000, num_unit_sets=1)  # fmt: skip
    refs = [raw._next_raw()[0] for _ in range(12)]
    mine = {w[0] for e in (0, 1, 2) for w in slot_work(5, 1, 4, seed=0, epoch=e)}
    assert {raw.work(e)[p][0] for e, p, _ in refs} <= mine


def _rewrite(src: Path, dst: Path, change) -> None:
    """Copy a tar member by member; change(name, data) returns [(name, data)] to write."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin:
            data = tin.extractfile(member).read()
            for name, new in change(member.name, data):
                info = tarfile.TarInfo(name)
                info.size = len(new)
                tout.addfile(info, io.BytesIO(new))


def test_corrupt_members_are_skipped_logged_and_counted(shards, tmp_path, caplog):
    urls = expand_shards(str(shards))
    damaged = tmp_path / "bad.tar"
    keys = [s["key"] for s in iter_samples(urls[0])]

    def change(name, data):
        key, ext = name.split(".")
        if key == keys[0] and ext == "flac":
            return [(name, b"fLaC" + b"\x00" * 50)]  # a FLAC that does not decode
        if key == keys[1] and ext == "json":
            return [(name, b"{not json")]
        if key == keys[2] and ext == "json":
            return []  # a missing pair
        return [(name, data)]

    _rewrite(Path(urls[0]), damaged, change)
    batches = stream([str(damaged), *urls[1:]], buffer=0)
    with caplog.at_level(logging.WARNING, logger="hubertlab.data.stream"):
        got = take(batches, 12)  # one epoch and more
    assert sum(f[-1] for f in got) >= 3
    assert "bad.tar: " in caplog.text and "flac does not decode" in caplog.text
    assert "json does not decode" in caplog.text and "lacks its .flac or .json" in caplog.text


def test_a_truncated_shard_is_reported_and_the_rest_is_read(shards, tmp_path, caplog):
    urls = expand_shards(str(shards))
    cut = tmp_path / "cut.tar"
    data = Path(urls[0]).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        got = take(stream([str(cut), *urls[1:]], buffer=0), 12)
    assert "cut.tar: damaged after" in caplog.text
    assert len(got) == 12


@pytest.mark.parametrize("name", ["../evil.flac", "/abs.flac"])
def test_members_with_dotdot_or_absolute_names_are_refused(shards, tmp_path, name):
    urls = expand_shards(str(shards))
    evil = tmp_path / "evil.tar"
    _rewrite(
        Path(urls[0]), evil, lambda n, d: [(n, d)] + ([(name, d)] if n.endswith("json") else [])
    )
    for source in (str(evil), f"pipe:cat {evil}"):
        with pytest.raises(ValueError, match="absolute path or '..'"):
            take(stream([source], buffer=0), 3)


def test_units_that_do_not_fit_the_audio_are_an_error_naming_shard_and_key(shards, tmp_path):
    urls = expand_shards(str(shards))
    bad = tmp_path / "units.tar"

    def change(name, data):
        if name.endswith(".json"):
            data = data.replace(b'"units": [0, ', b'"units": [')  # one unit short
        return [(name, data)]

    _rewrite(Path(urls[0]), bad, change)
    with pytest.raises(ValueError, match=r"units\.tar: \d+_spk\d_utt\d+ has \d+ units, expected"):
        take(stream([str(bad)], buffer=0), 3)
    audio_only = take(stream([str(bad)], buffer=0, units=0), 3)  # the units are not read
    assert all(f[5] == () for f in audio_only)


@pytest.mark.parametrize("bad", [-1, 1.5, "5"])
def test_unit_ids_that_are_not_non_negative_integers_are_an_error_naming_shard_and_key(
    shards, tmp_path, bad
):
    # -1 is the loss's ignore index: a run on it trained at loss 0.0.
    urls = expand_shards(str(shards))
    shard = tmp_path / "ids.tar"

    def change(name, data):
        if name.endswith(".json"):
            meta = json.loads(data)
            meta["units"][1] = bad
            data = json.dumps(meta).encode()
        return [(name, data)]

    _rewrite(Path(urls[0]), shard, change)
    with pytest.raises(ValueError, match=rf"ids\.tar: \d+_spk\d_utt\d+\.json: unit {bad!r}"):
        take(stream([str(shard)], buffer=0), 1)
    with pytest.raises(ValueError, match=r"ids\.tar: \d+_spk\d_utt\d+\.json: unit"):
        next(read_shard(shard))
    with pytest.raises(ValueError, match="is not below k = 2"):  # a bound when one is known
        take(stream(urls[:1], buffer=0, num_units=2), 1)


def test_a_refusal_in_a_worker_arrives_as_one_line_naming_shard_and_member(shards, tmp_path):
    urls = expand_shards(str(shards))
    evil = tmp_path / "evil.tar"
    _rewrite(Path(urls[0]), evil, lambda n, d: [(n, d)] + ([("../x.flac", d)] * n.endswith("json")))
    with pytest.raises(StreamError, match=r"evil\.tar: member '\.\./x\.flac'") as caught:
        take(stream([str(evil)] * 1, workers=2, buffer=0), 2)
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)


def test_shards_without_units_are_refused_in_one_line_from_a_worker(shards, tmp_path):
    urls = expand_shards(str(shards))
    bare = tmp_path / "bare.tar"

    def strip(name, data):
        if name.endswith(".json"):
            meta = json.loads(data)
            del meta["units"]
            data = json.dumps(meta).encode()
        return [(name, data)]

    _rewrite(Path(urls[0]), bare, strip)
    with pytest.raises(StreamError, match=r"bare\.tar: \d+_spk\d_utt\d+\.json has no units") as e:
        take(stream([str(bare)], workers=1, buffer=0), 1)
    assert "\n" not in str(e.value)


def test_duplicate_keys_are_warned_and_a_repeated_member_is_refused(shards, tmp_path, caplog):
    urls = expand_shards(str(shards))
    keys = [s["key"] for s in iter_samples(urls[0])]
    twice = tmp_path / "twice.tar"
    _rewrite(Path(urls[0]), twice, lambda n, d: [(n, d)] * (2 if n.endswith(".json") else 1))
    with pytest.raises(ValueError, match=rf"twice\.tar: member '{keys[0]}\.json' appears twice"):
        list(iter_samples(twice))
    again = tmp_path / "again.tar"
    members = []
    _rewrite(Path(urls[0]), again, lambda n, d: members.append((n, d)) or [(n, d)])
    with tarfile.open(again, "a") as tar:  # the first sample once more, after the others
        for name, data in members[:2]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with caplog.at_level(logging.WARNING):
        samples = list(iter_samples(again))
    assert len(samples) == len(keys) + 1
    assert f"again.tar: key '{keys[0]}' appears twice" in caplog.text
