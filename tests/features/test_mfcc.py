"""MFCC: equal to kaldi-native-fbank (Kaldi's own code) on real speech, deltas as torchaudio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hubertlab.constants import num_frames
from hubertlab.data.manifest import read_manifest
from hubertlab.features.mfcc import MfccExtractor
from hubertlab.models.mfcc import (
    MFCC_DIM,
    compute_deltas,
    compute_mfcc,
    mfcc_num_frames,
    mfcc_of_waveform,
)
from tests.units_fixtures import demo_corpus

knf = pytest.importorskip("kaldi_native_fbank")


def kaldi_cepstra(wav: np.ndarray) -> np.ndarray:
    """fairseq's recipe through Kaldi's C++: use_energy=False (C0 kept), no dither."""
    opts = knf.MfccOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.use_energy = False
    opts.mel_opts.num_bins = 23
    opts.num_ceps = 13
    mfcc = knf.OnlineMfcc(opts)
    mfcc.accept_waveform(16000, wav.tolist())
    mfcc.input_finished()
    return np.array([mfcc.get_frame(i) for i in range(mfcc.num_frames_ready)], np.float32)


def reference_deltas(x: np.ndarray, window: int = 2) -> np.ndarray:
    """torchaudio compute_deltas written out: replicate padding, sum n (x[t+n] - x[t-n]) / norm."""
    t = len(x)
    out = np.zeros_like(x, dtype=np.float64)
    for i in range(t):
        for n in range(1, window + 1):
            out[i] += n * (x[min(i + n, t - 1)] - x[max(i - n, 0)])
    return out / (2 * sum(n * n for n in range(1, window + 1)))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> list[np.ndarray]:
    manifest = read_manifest(demo_corpus(tmp_path_factory) / "manifest.csv")
    return [manifest.read_audio(i) for i in range(4)]


def test_cepstra_match_kaldi_on_speech(speech):
    for wav in speech:
        ours = mfcc_of_waveform(wav)
        ref = kaldi_cepstra(wav)
        assert ours.shape == (len(ref), MFCC_DIM)
        # float32 FFT round-off only: C0 reaches ~50 in magnitude.
        np.testing.assert_allclose(ours[:, :13], ref, atol=2e-3, rtol=1e-4)


def test_deltas_match_reference_and_kaldi(speech):
    feats = mfcc_of_waveform(speech[0])
    ceps = feats[:, :13].astype(np.float64)
    d1 = reference_deltas(ceps)
    np.testing.assert_allclose(feats[:, 13:26], d1, atol=1e-4)
    np.testing.assert_allclose(feats[:, 26:], reference_deltas(d1), atol=1e-4)
    # Kaldi's add-deltas agrees except for delta-delta at the two edges (it convolves once).
    opts = knf.DeltaOptions()
    opts.order, opts.window = 2, 2
    kaldi = knf.compute_deltas(opts, feats[:, :13].copy())
    np.testing.assert_allclose(feats[:, 13:26], kaldi[:, 13:26], atol=1e-4)
    np.testing.assert_allclose(feats[4:-4, 26:], kaldi[4:-4, 26:], atol=1e-4)


def test_frame_counts_and_label_rate():
    for n in [0, 1, 399, 400, 401, 559, 560, 719, 720, 16000, 16399, 16400, 16721]:
        frames = mfcc_num_frames(n)
        assert frames == (0 if n < 400 else (n - 400) // 160 + 1)
        # every second 100 Hz frame gives exactly the CNN's 50 Hz frame count
        assert (frames + 1) // 2 == num_frames(n)
        assert mfcc_of_waveform(np.zeros(n, np.float32)).shape == (frames, MFCC_DIM)
    assert all((mfcc_num_frames(n) + 1) // 2 == num_frames(n) for n in range(0, 4000))


def test_batch_equals_single_files(speech):
    lengths = [len(w) for w in speech[:3]] + [399]
    batch = np.zeros((4, max(lengths)), np.float32)
    for i, w in enumerate(speech[:3]):
        batch[i, : len(w)] = w
    feats, frame_lengths = compute_mfcc(torch.from_numpy(batch), torch.tensor(lengths))
    assert frame_lengths.tolist() == [mfcc_num_frames(n) for n in lengths]
    for i, w in enumerate(speech[:3]):
        n = frame_lengths[i]
        np.testing.assert_allclose(feats[i, :n].numpy(), mfcc_of_waveform(w), atol=1e-5)
        assert not feats[i, n:].any()  # padding frames are zero, deltas see no padding
    assert not feats[3].any()


def test_compute_deltas_per_row_edges():
    x = torch.arange(10, dtype=torch.float32).reshape(1, 10, 1).repeat(2, 1, 1)
    d = compute_deltas(x, torch.tensor([10, 6]))
    np.testing.assert_allclose(d[0, :, 0].numpy(), reference_deltas(x[0].numpy())[:, 0])
    np.testing.assert_allclose(d[1, :6, 0].numpy(), reference_deltas(x[1, :6].numpy())[:, 0])
    assert not d[1, 6:].any()


def test_extractor_and_bad_input():
    ex = MfccExtractor()
    assert (ex.dim, ex.frame_rate_hz, ex.settings()["kind"]) == (39, 100, "mfcc")
    assert ex(np.zeros(16000, np.float32)).shape == (ex.num_frames(16000), 39)
    with pytest.raises(ValueError, match="waveforms must be"):
        compute_mfcc(torch.zeros(2, 2, 500))
    with pytest.raises(ValueError, match="lengths must lie"):
        compute_mfcc(torch.zeros(2, 500), torch.tensor([500, 600]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        compute_mfcc(torch.zeros(2, 500), torch.tensor([500]))


def test_long_file_spans_blocks_and_matches_kaldi(speech):
    # > 1024 frames: several FFT blocks, and a file length that is no whole number of hops.
    wav = np.concatenate(speech)[: 160 * 1700 + 457]
    ours = mfcc_of_waveform(wav)
    ref = kaldi_cepstra(wav)
    assert ours.shape == (len(ref), MFCC_DIM)
    np.testing.assert_allclose(ours[:, :13], ref, atol=2e-3, rtol=1e-4)
    d1 = reference_deltas(ours[:, :13].astype(np.float64))
    np.testing.assert_allclose(ours[:, 13:26], d1, atol=1e-4)
    np.testing.assert_allclose(ours[:, 26:], reference_deltas(d1), atol=1e-4)


def test_batch_of_many_rows_groups_and_short_rows(speech):
    # More frames than one group: rows go through several joint calls; short rows have none.
    waves = [w[: 400 + 160 * k + 37] for k in (0, 1, 2, 5, 700, 900) for w in speech[:2]]
    waves = [w for w in waves if len(w) >= 400] + [np.zeros(300, np.float32)]
    lengths = [len(w) for w in waves]
    batch = np.zeros((len(waves), max(lengths)), np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    feats, frame_lengths = compute_mfcc(batch, np.array(lengths))
    for i, w in enumerate(waves):
        n = int(frame_lengths[i])
        np.testing.assert_allclose(feats[i, :n].numpy(), mfcc_of_waveform(w), atol=1e-5)
        assert not feats[i, n:].any()
