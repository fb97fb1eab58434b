"""Random training windows: frame-grid starts, targets equal to the whole recording's slice,
read by seek, seeded, usable by a DataLoader; inference window starts cover every frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hubertlab.constants import num_frames
from hubertlab.data.frame_targets import frame_targets, ignore_mask
from hubertlab.data.manifest import ManifestRow, write_manifest
from hubertlab.data.rttm import VTC_CLASSES, Turn
from hubertlab.data.windows import (
    WindowDataset,
    load_recordings,
    read_window,
    sliding_window_starts,
    window_and_hop,
)

SECONDS = (11.3, 2.5)  # the second is shorter than a window


@pytest.fixture
def corpus(tmp_path: Path):
    rng = np.random.default_rng(0)
    rows, turns = [], {}
    for i, seconds in enumerate(SECONDS):
        n = int(seconds * 16000)
        sf.write(tmp_path / f"r{i}.wav", rng.uniform(-0.5, 0.5, n).astype(np.float32), 16000)
        rows.append(ManifestRow(f"r{i}", f"r{i}.wav", n))
        onsets = rng.uniform(0, seconds - 0.5, 12)
        turns[f"r{i}"] = [
            Turn(f"r{i}", float(a), float(rng.uniform(0.1, 3.0)), VTC_CLASSES[j % 4])
            for j, a in enumerate(onsets)
        ]
    write_manifest(rows, tmp_path / "manifest.csv")
    uem = {"r0": [(0.5, 9.0)], "r1": [(0.0, 2.5)]}
    return tmp_path, turns, uem


def test_window_targets_equal_slices_of_the_recording(corpus):
    root, turns, uem = corpus
    recordings = load_recordings(root / "manifest.csv", turns, uem)
    data = WindowDataset(recordings, windows_per_epoch=40, seed=3)
    assert data.frames == 199
    seen = set()
    for i in range(len(data)):
        wav, targets, ignore = data[i]
        recording, start = data.window(i)
        seen.add(recording.fileid)
        assert start % 320 == 0 and wav.shape == (64000,) and targets.shape == (199, 4)
        whole = np.asarray(sf.read(recording.path, dtype="float32")[0])
        expected_wav = np.zeros(64000, np.float32)
        piece = whole[start : start + 64000]
        expected_wav[: len(piece)] = piece
        np.testing.assert_array_equal(wav.numpy(), expected_wav)
        total = num_frames(recording.num_samples)
        k = start // 320
        full = frame_targets(turns[recording.fileid], total, VTC_CLASSES)
        full_ignore = ignore_mask(uem[recording.fileid], total)
        valid = min(199, total - k)
        np.testing.assert_array_equal(targets.numpy()[:valid], full[k : k + valid])
        np.testing.assert_array_equal(ignore.numpy()[:valid], full_ignore[k : k + valid])
        assert ignore.numpy()[valid:].all()  # frames past the end of a short recording
    assert seen == {"r0", "r1"}


def test_seeded_and_loader(corpus):
    root, turns, _ = corpus
    recordings = load_recordings(root / "manifest.csv", turns)
    a = WindowDataset(recordings, windows_per_epoch=8, seed=1)
    b = WindowDataset(recordings, windows_per_epoch=8, seed=1)
    assert [a.window(i)[1] for i in range(8)] == [b.window(i)[1] for i in range(8)]
    b.set_epoch(1)
    assert [a.window(i)[1] for i in range(8)] != [b.window(i)[1] for i in range(8)]
    resumed = WindowDataset(recordings, windows_per_epoch=8, seed=1)
    resumed.load_state_dict(b.state_dict())
    assert [resumed.window(i)[1] for i in range(8)] == [b.window(i)[1] for i in range(8)]
    loader = torch.utils.data.DataLoader(a, batch_size=4, num_workers=0)
    wav, targets, ignore = next(iter(loader))
    assert wav.shape == (4, 64000) and targets.shape == (4, 199, 4) and ignore.dtype == torch.bool


def test_read_window_pads_and_checks_rate(tmp_path: Path):
    sf.write(tmp_path / "x.wav", np.arange(1000, dtype=np.float32) / 2000, 16000)
    out = read_window(tmp_path / "x.wav", 900, 300)
    assert out.shape == (300,) and out[99] == pytest.approx(999 / 2000, abs=1e-4)
    assert not out[100:].any()
    sf.write(tmp_path / "y.wav", np.zeros(100, np.float32), 8000)
    with pytest.raises(ValueError, match="y.wav: sample rate 8000"):
        read_window(tmp_path / "y.wav", 0, 10)


def test_load_recordings_rejects_unknown_fileids(corpus):
    root, turns, _ = corpus
    with pytest.raises(ValueError, match="RTTM fileids are not in the manifest, e.g. 'zz'"):
        load_recordings(root / "manifest.csv", {**turns, "zz": []})


@pytest.mark.parametrize("num_samples", [1000, 64000, 64100, 100_000, 160_000 + 123])
def test_sliding_windows_cover_every_frame(num_samples):
    starts = sliding_window_starts(num_samples)
    assert all(s % 320 == 0 for s in starts)
    assert all(b - a <= 16000 for a, b in zip(starts, starts[1:], strict=False))
    covered = np.zeros(num_frames(num_samples), dtype=bool)
    for s in starts:
        covered[s // 320 : s // 320 + 199] = True
        assert s + 64000 - num_samples < 320 or s == 0  # < 20 ms of padding
    assert covered.all()


def test_window_and_hop_is_on_the_frame_grid():
    """Training, threshold tuning and predict take their windows here: 4 s with 75 % overlap
    hop 1 s; a hop is a whole number of frames, rounded, and never under one frame."""
    assert window_and_hop(4.0) == (64000, 16000)
    assert window_and_hop(2.0, overlap=0.75) == (32000, 8000)
    assert window_and_hop(2.3) == (36800, 9280)  # 9200 samples round to 29 frames
    assert window_and_hop(0.1, overlap=0.99) == (1600, 320)
    for seconds in (0.5, 1.0, 2.3, 4.0, 7.77):
        for overlap in (0.0, 0.5, 0.75):
            window, hop = window_and_hop(seconds, overlap)
            assert window == round(seconds * 16000)
            assert hop % 320 == 0 and hop >= 320
