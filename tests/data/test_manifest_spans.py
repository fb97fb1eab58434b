"""Span rows (start + num_samples) read only their part of a recording, in every format."""

import tarfile

import numpy as np
import pytest
import soundfile as sf

from hubertlab.data.audio import AudioError, iter_blocks, read_audio
from hubertlab.data.manifest import (
    ManifestError,
    ManifestRow,
    read_manifest,
    write_manifest,
)


def _noise(n, seed=0):
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


@pytest.fixture
def recording(tmp_path):
    wav = _noise(16000 * 5)
    sf.write(tmp_path / "rec.wav", wav, 16000, subtype="FLOAT")
    return tmp_path, wav


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_span_rows_roundtrip_and_read_only_the_span(recording, ext):
    root, wav = recording
    rows = [
        ManifestRow("rec_a", "rec.wav", 16000, start=8000),
        ManifestRow("rec_b", "rec.wav", 4000, start=0),
        ManifestRow("whole", "rec.wav", len(wav)),
    ]
    write_manifest(rows, root / f"m{ext}")
    manifest = read_manifest(root / f"m{ext}")
    assert list(manifest) == rows
    np.testing.assert_array_equal(manifest.read_audio(0), wav[8000:24000])
    np.testing.assert_array_equal(manifest.read_audio(1), wav[:4000])
    np.testing.assert_array_equal(manifest.read_audio(2), wav)


def test_csv_header_has_start_only_when_needed(recording):
    root, _ = recording
    write_manifest([ManifestRow("a", "rec.wav", 10)], root / "plain.csv")
    assert (root / "plain.csv").read_text().splitlines()[0] == "fileid,path,num_samples"
    write_manifest([ManifestRow("a", "rec.wav", 10, start=5)], root / "span.csv")
    assert (root / "span.csv").read_text().splitlines()[0] == "fileid,path,num_samples,start"


def test_span_past_the_end_names_the_row(recording):
    root, wav = recording
    row = ManifestRow("late", "rec.wav", 16000, start=len(wav) - 100)
    with pytest.raises(AudioError, match=r"row 'late'.*goes past the end.*80000 samples"):
        row.read_audio(root)


def test_negative_start_and_tsv_spans_are_refused(recording):
    root, _ = recording
    (root / "bad.csv").write_text("fileid,path,num_samples,start\na,rec.wav,10,-3\n")
    with pytest.raises(ManifestError, match=r"bad.csv:2: column 'start' is negative"):
        read_manifest(root / "bad.csv")
    with pytest.raises(ManifestError, match="TSV cannot hold spans"):
        write_manifest([ManifestRow("a", "rec.wav", 10, start=1)], root / "m.tsv")


@pytest.mark.parametrize("rate", [44100, 22050, 8000])
def test_span_of_other_rates_matches_the_whole_file_resampled(tmp_path, rate):
    t = np.arange(rate * 3) / rate
    native = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(tmp_path / "r.flac", native, rate, subtype="PCM_24")
    whole = read_audio(tmp_path / "r.flac")
    start, n = 12345, 16000
    span = read_audio(tmp_path / "r.flac", start=start, num_samples=n)
    assert span.shape == (n,)
    np.testing.assert_allclose(span, whole[start : start + n], atol=2e-3)


def test_span_of_a_tar_member(tmp_path, recording):
    root, wav = recording
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        tar.add(root / "rec.wav", arcname="x/rec.wav")
    with tarfile.open(tmp_path / "a.tar") as tar:
        member = tar.getmember("x/rec.wav")
    row = ManifestRow(
        "x/rec_1", "x/rec.wav", 3200, archive="a.tar",
        byte_offset=member.offset_data, byte_size=member.size, start=1600,
    )  # fmt: skip
    write_manifest([row], tmp_path / "t.csv")
    manifest = read_manifest(tmp_path / "t.csv")
    assert manifest[0] == row
    np.testing.assert_array_equal(manifest.read_audio(0), wav[1600:4800])


@pytest.mark.parametrize("rate", [16000, 44100, 22050, 8000, 48000])
def test_blocks_concatenate_to_the_whole_recording(tmp_path, rate):
    native = _noise(rate * 2 + 123, seed=1)
    sf.write(tmp_path / "r.wav", native, rate, subtype="FLOAT")
    whole = read_audio(tmp_path / "r.wav")
    blocks = list(iter_blocks(tmp_path / "r.wav", 5000))
    assert all(len(b) == 5000 for b in blocks[:-1]) and 0 < len(blocks[-1]) <= 5000
    joined = np.concatenate(blocks)
    assert len(joined) == len(whole)
    np.testing.assert_allclose(joined[:-50], whole[:-50], atol=1e-3)
    span = np.concatenate(list(iter_blocks(tmp_path / "r.wav", 3000, start=7777, num_samples=9000)))
    assert len(span) == 9000
    np.testing.assert_allclose(span, whole[7777:16777], atol=1e-3 if rate != 16000 else 0)
    with pytest.raises(AudioError, match="goes past the end"):
        list(iter_blocks(tmp_path / "r.wav", 3000, start=len(whole) - 10, num_samples=20))


def test_features_of_span_rows(recording, tmp_path):
    from hubertlab.features.mfcc import MfccExtractor
    from hubertlab.features.store import FeatureStore, extract_features_to_store

    root, wav = recording
    rows = [ManifestRow("a", "rec.wav", 16000, start=16000), ManifestRow("w", "rec.wav", len(wav))]
    write_manifest(rows, root / "m.csv")
    extract_features_to_store(root / "m.csv", tmp_path / "store", MfccExtractor())
    store = FeatureStore.open(tmp_path / "store")
    extractor = MfccExtractor()
    assert store.length("a") == extractor.num_frames(16000)
    np.testing.assert_allclose(
        store["a"].astype(np.float32), extractor(wav[16000:32000]).astype(np.float16), atol=1e-2
    )
