"""Feature store: shards side by side, resume after a kill, skip when done, memmap read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hubertlab.data.manifest import read_manifest, write_manifest
from hubertlab.features.mfcc import MfccExtractor
from hubertlab.features.store import (
    FeatureStore,
    extract_features_to_store,
    shard_rows,
    write_store,
)
from hubertlab.models.mfcc import mfcc_of_waveform
from tests.units_fixtures import demo_corpus


class Crash(RuntimeError):
    pass


def crash_after(commits: int):
    seen = []

    def hook(done: int) -> None:
        seen.append(done)
        if len(seen) == commits:
            raise Crash(f"killed after {done} utterances")

    return hook


class CountingExtractor(MfccExtractor):
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, wav):
        self.calls += 1
        return super().__call__(wav)


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory) -> Path:
    return demo_corpus(tmp_path_factory) / "manifest.csv"


def shard_bytes(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.iterdir())}


def test_store_roundtrip_two_shards(manifest_path, tmp_path):
    manifest = read_manifest(manifest_path)
    for shard in (1, 0):  # any order
        extract_features_to_store(manifest, tmp_path, MfccExtractor(), shard, 2, "float32")
    store = FeatureStore.open(tmp_path)
    assert len(store) == len(manifest) and store.dim == 39 and store.frame_rate_hz == 100
    assert store.fileids == [r.fileid for r in manifest]
    for i in (0, len(manifest) - 1):
        expected = mfcc_of_waveform(manifest.read_audio(i))
        np.testing.assert_array_equal(store[manifest[i].fileid], expected)
        np.testing.assert_array_equal(store.read_frames(manifest[i].fileid, 3, 10), expected[3:10])
    chunks = list(store.iter_chunks(max_frames=1000))
    assert all(len(c) <= 1000 for c in chunks)
    everything = np.concatenate([store[f] for f in store.fileids])
    np.testing.assert_array_equal(np.concatenate(chunks), everything)
    assert store.num_frames == len(everything)


def test_killed_shard_resumes_to_the_same_result(manifest_path, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    extract_features_to_store(manifest_path, whole, MfccExtractor(), chunk_bytes=20_000)
    with pytest.raises(Crash):
        extract_features_to_store(
            manifest_path, resumed, MfccExtractor(), chunk_bytes=20_000, on_chunk=crash_after(3)
        )
    # A kill in the middle of a write leaves uncommitted bytes behind: they must be dropped.
    with open(resumed / "shard-00000-of-00001.bin", "ab") as f:
        f.write(b"\x01" * 1234)
    with open(resumed / "shard-00000-of-00001.rows", "a") as f:
        f.write("garbage\t7\n")
    counting = CountingExtractor()
    extract_features_to_store(manifest_path, resumed, counting, chunk_bytes=20_000)
    assert 0 < counting.calls < len(read_manifest(manifest_path))  # only the rest was computed
    assert shard_bytes(whole) == shard_bytes(resumed)


def test_sigkilled_process_resumes(manifest_path, tmp_path):
    script = (
        "import os, signal, sys\n"
        "from hubertlab.features.mfcc import MfccExtractor\n"
        "from hubertlab.features.store import extract_features_to_store\n"
        "def hook(done):\n"
        "    if done >= 5: os.kill(os.getpid(), signal.SIGKILL)\n"
        "extract_features_to_store(sys.argv[1], sys.argv[2], MfccExtractor(),\n"
        "                          chunk_bytes=1, on_chunk=hook)\n"
    )
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", script, str(manifest_path), str(out)])
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "shard-00000-of-00001.done").exists()
    extract_features_to_store(manifest_path, out, MfccExtractor())
    whole = tmp_path / "whole"
    extract_features_to_store(manifest_path, whole, MfccExtractor())
    a, b = FeatureStore.open(out), FeatureStore.open(whole)
    assert a.fileids == b.fileids
    for f in a.fileids:
        np.testing.assert_array_equal(a[f], b[f])


def test_done_shard_is_skipped(manifest_path, tmp_path):
    extract_features_to_store(manifest_path, tmp_path, MfccExtractor())
    before = os.stat(tmp_path / "shard-00000-of-00001.bin").st_mtime_ns
    counting = CountingExtractor()
    extract_features_to_store(manifest_path, tmp_path, counting)
    assert counting.calls == 0
    assert os.stat(tmp_path / "shard-00000-of-00001.bin").st_mtime_ns == before


def test_float16_store(manifest_path, tmp_path):
    extract_features_to_store(manifest_path, tmp_path, MfccExtractor(), dtype="float16")
    store = FeatureStore.open(tmp_path)
    fileid = store.fileids[0]
    assert store[fileid].dtype == np.float16
    manifest = read_manifest(manifest_path)
    expected = mfcc_of_waveform(manifest.read_audio(0))
    np.testing.assert_allclose(store[fileid].astype(np.float32), expected, rtol=2e-3, atol=2e-3)


def test_shards_partition_the_manifest(manifest_path):
    manifest = read_manifest(manifest_path)
    parts = [shard_rows(manifest, i, 3) for i in range(3)]
    assert [r.fileid for p in parts for r in p] == [r.fileid for r in manifest]


def test_bad_input(manifest_path, tmp_path):
    with pytest.raises(ValueError, match="shard must be in"):
        extract_features_to_store(manifest_path, tmp_path / "a", MfccExtractor(), 2, 2)
    with pytest.raises(ValueError, match="num_shards"):
        extract_features_to_store(manifest_path, tmp_path / "a", MfccExtractor(), 0, 0)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        extract_features_to_store(tmp_path / "nope.csv", tmp_path / "a", MfccExtractor())
    with pytest.raises(ValueError, match="dtype"):
        extract_features_to_store(manifest_path, tmp_path / "b", MfccExtractor(), dtype="int8")
    # one shard of two written: the store is incomplete, the error names the missing shard
    extract_features_to_store(manifest_path, tmp_path / "c", MfccExtractor(), 0, 2)
    with pytest.raises(ValueError, match="shard 1 of 2 is not finished"):
        FeatureStore.open(tmp_path / "c")
    # other settings into the same folder
    with pytest.raises(ValueError, match="other settings.*dtype"):
        extract_features_to_store(manifest_path, tmp_path / "c", MfccExtractor(), 1, 2, "float32")
    with pytest.raises(FileNotFoundError, match="not a feature store"):
        FeatureStore.open(tmp_path / "nothing")
    # a missing audio file names it
    manifest = read_manifest(manifest_path)
    rows = list(manifest)[:2]
    write_manifest(rows, tmp_path / "m" / "manifest.csv")
    with pytest.raises(ValueError, match=rows[0].path.split("/")[-1]):
        extract_features_to_store(tmp_path / "m" / "manifest.csv", tmp_path / "d", MfccExtractor())


def test_write_store_and_lookup_errors(tmp_path):
    arrays = {f"spk/{i}": np.full((i, 4), i, np.float32) for i in range(5)}
    write_store(tmp_path, arrays.items(), dim=4, dtype="float32")
    store = FeatureStore.open(tmp_path)
    for fileid, frames in arrays.items():
        np.testing.assert_array_equal(store[fileid], frames)
    with pytest.raises(KeyError, match="spk/9"):
        store["spk/9"]


def test_layer_features_chunked_like_whole_file(manifest_path, tmp_path):
    torch = pytest.importorskip("torch")
    from hubertlab.constants import num_frames
    from hubertlab.features.hidden import LayerExtractor
    from hubertlab.models.config import HubertConfig
    from hubertlab.models.hubert import HubertModel

    torch.manual_seed(0)
    model = HubertModel(HubertConfig.preset("tiny"))
    wav = np.random.default_rng(0).standard_normal(16000 * 12 + 123).astype(np.float32) * 0.1
    whole = LayerExtractor(model, 2, chunk_seconds=100)(wav)
    chunked = LayerExtractor(model, 2, chunk_seconds=3, context_seconds=2)(wav)
    assert whole.shape == chunked.shape == (num_frames(len(wav)), model.cfg.backbone.hidden_dim)
    # 2 s of context each side: borders move features by ~1% of their range at most
    assert np.abs(whole - chunked).max() < 0.03 * np.abs(whole).max()
    no_context = LayerExtractor(model, 2, chunk_seconds=3, context_seconds=0)(wav)
    assert np.abs(whole - no_context).max() > np.abs(whole - chunked).max()
    # into a store, sharded, with the frame count checked per file
    manifest = read_manifest(manifest_path)
    write_manifest(list(manifest)[:3], tmp_path / "m.jsonl")
    (tmp_path / "wav").symlink_to(manifest.root / "wav")
    extractor = LayerExtractor(model, 1)
    extract_features_to_store(tmp_path / "m.jsonl", tmp_path / "s", extractor, dtype="float32")
    store = FeatureStore.open(tmp_path / "s")
    assert store.meta["extractor"]["layer"] == 1 and store.frame_rate_hz == 50
    first = manifest[0]
    assert store[first.fileid].shape == (
        num_frames(first.num_samples),
        model.cfg.backbone.hidden_dim,
    )
    # a checkpoint folder gives the same features as the model object
    from hubertlab.models.checkpoint import save_pretrained

    save_pretrained(model, tmp_path / "ckpt")
    from_dir = LayerExtractor(tmp_path / "ckpt", 1)
    assert from_dir.settings()["checkpoint"] == str(tmp_path / "ckpt")
    np.testing.assert_allclose(from_dir(wav[:32000]), extractor(wav[:32000]), atol=1e-5)
    with pytest.raises(ValueError, match="layer must be in"):
        LayerExtractor(model, 99)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        LayerExtractor(tmp_path / "no_model", 1)


def test_resume_with_a_changed_manifest_is_refused(manifest_path, tmp_path):
    with pytest.raises(Crash):
        extract_features_to_store(
            manifest_path, tmp_path / "s", MfccExtractor(), chunk_bytes=1, on_chunk=crash_after(2)
        )
    manifest = read_manifest(manifest_path)
    rows = list(manifest)[::-1]
    write_manifest(rows, manifest_path.parent / "reversed.csv")
    with pytest.raises(ValueError, match="manifest changed"):
        extract_features_to_store(manifest_path.parent / "reversed.csv", tmp_path / "s",
                                  MfccExtractor())  # fmt: skip


def test_a_full_disk_names_the_shard(manifest_path, tmp_path, monkeypatch, capsys):
    import errno

    from hubertlab.cli import main

    real_fsync = os.fsync

    def full_for_bin(fd):  # the disk fills while the features are appended
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".bin"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_for_bin)
    store = tmp_path / "store"
    assert main(["features", str(manifest_path), str(store), "--kind", "mfcc"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"No space left on device while writing {store / 'shard-00000-of-00001'}.bin" in err
