"""Iteration-1 targets: Kaldi MFCC (+ delta, delta-delta), 39-d at 100 Hz, batched in torch.

The recipe is fairseq's (torchaudio's `compliance.kaldi.mfcc` with `use_energy=False`, then
`compute_deltas` twice): 25 ms Povey window, 10 ms shift, snip_edges, DC offset removed,
pre-emphasis 0.97, 512-point power spectrum, 23 Kaldi mel bins (20 Hz to Nyquist), log,
DCT to 13 cepstra (C0 kept), cepstral lifter 22, no dither.

Speed comes from doing the whole per-frame chain as few passes over memory as possible: the DC
offset is taken from a cumulative sum of the waveform, pre-emphasis is applied once to the
waveform (not per frame), the windowed frames go straight into a zero-padded 512-wide buffer,
and the lifter is folded into the DCT matrix. Frames are processed in cache-sized blocks.
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np
import torch

from hubertlab.constants import MFCC_HOP, RECEPTIVE_FIELD, SAMPLE_RATE

MFCC_DIM = 39
NUM_CEPS = 13
NUM_MEL_BINS = 23
FFT_SIZE = 512
PREEMPHASIS = 0.97
CEPSTRAL_LIFTER = 22.0
LOW_FREQ_HZ = 20.0
DELTA_WINDOW = 2
# Frames per block: a (block, 512) float32 buffer plus its spectrum stay in the L2/L3 cache.
_BLOCK_FRAMES = 2048
_LOG_FLOOR = float(np.finfo(np.float32).eps)  # Kaldi floors mel energies at FLT_EPSILON


def mfcc_num_frames(num_samples: int) -> int:
    """Kaldi frames with snip_edges: floor((n - 400) / 160) + 1 (0 if n < 400)."""
    if num_samples < RECEPTIVE_FIELD:
        return 0
    return (num_samples - RECEPTIVE_FIELD) // MFCC_HOP + 1


def povey_window(length: int = RECEPTIVE_FIELD) -> np.ndarray:
    """Kaldi's Povey window: a Hann window raised to 0.85 (float64)."""
    i = np.arange(length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2 * math.pi * i / (length - 1))) ** 0.85


def kaldi_mel_banks(
    num_bins: int = NUM_MEL_BINS, fft_size: int = FFT_SIZE, low_freq_hz: float = LOW_FREQ_HZ
) -> np.ndarray:
    """Triangular filters on Kaldi's mel scale 1127 ln(1 + f/700), shape (fft_size//2+1, bins).

    As Kaldi, the triangles are linear in mel and the Nyquist bin gets weight 0."""
    nyquist = SAMPLE_RATE / 2

    def mel(f):
        return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)

    low, high = mel(low_freq_hz), mel(nyquist)
    delta = (high - low) / (num_bins + 1)
    fft_mels = mel(np.arange(fft_size // 2) * SAMPLE_RATE / fft_size)  # (fft_size/2,)
    banks = np.zeros((fft_size // 2 + 1, num_bins), dtype=np.float64)
    for b in range(num_bins):
        left, center, right = low + b * delta, low + (b + 1) * delta, low + (b + 2) * delta
        up = (fft_mels - left) / (center - left)
        down = (right - fft_mels) / (right - center)
        inside = (fft_mels > left) & (fft_mels < right)
        banks[: fft_size // 2, b] = np.where(inside, np.minimum(up, down), 0.0)
    return banks


def lifted_dct(num_bins: int = NUM_MEL_BINS, num_ceps: int = NUM_CEPS) -> np.ndarray:
    """Kaldi's orthonormal DCT-II (first `num_ceps` rows) times the cepstral lifter, as a
    (num_bins, num_ceps) matrix so that cepstra = log_mel @ matrix."""
    k = np.arange(num_ceps, dtype=np.float64)[:, None]
    j = np.arange(num_bins, dtype=np.float64)[None, :]
    dct = np.sqrt(2.0 / num_bins) * np.cos(math.pi / num_bins * (j + 0.5) * k)
    dct[0] = np.sqrt(1.0 / num_bins)
    lifter = 1.0 + 0.5 * CEPSTRAL_LIFTER * np.sin(math.pi * np.arange(num_ceps) / CEPSTRAL_LIFTER)
    return (dct * lifter[:, None]).T


@functools.lru_cache(maxsize=8)
def _constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    window = torch.tensor(povey_window()[1:], dtype=torch.float32, device=device)
    # The mel matmul reads the spectrum as interleaved (re, im) pairs, so every bin's row is
    # listed twice and the power needs no pair sum; 24 columns (one zero) run faster than 23.
    banks = np.zeros((2 * (FFT_SIZE // 2 + 1), 24))
    banks[:, :NUM_MEL_BINS] = np.repeat(kaldi_mel_banks(), 2, axis=0)
    banks2 = torch.tensor(banks, dtype=torch.float32, device=device)
    dct = torch.tensor(lifted_dct(), dtype=torch.float32, device=device)
    return window, banks2, dct


class _Workspace:
    """Buffers reused across blocks and calls: fresh multi-megabyte tensors cost page faults
    that take longer than the FFT itself. One per thread and device."""

    def __init__(self, device: torch.device) -> None:
        self.frames = torch.zeros(_BLOCK_FRAMES, FFT_SIZE, dtype=torch.float32, device=device)
        self.spec = torch.empty(
            _BLOCK_FRAMES, FFT_SIZE // 2 + 1, dtype=torch.complex64, device=device
        )
        self.mel = torch.empty(_BLOCK_FRAMES, 24, dtype=torch.float32, device=device)


_local = threading.local()


def _workspace(device: torch.device) -> _Workspace:
    spaces = _local.__dict__.setdefault("spaces", {})
    if device not in spaces:
        spaces[device] = _Workspace(device)
    return spaces[device]


def _cepstra_block(frames: torch.Tensor, dc: torch.Tensor, out: torch.Tensor) -> None:
    """Cepstra of one block of at most _BLOCK_FRAMES frames into `out` (n, 13).

    frames: (n, 400) raw samples (a strided view of the waveform); dc: (n,) the
    (1 - 0.97) * mean correction of each frame."""
    window, banks2, dct = _constants(out.device)
    ws = _workspace(out.device)
    n = frames.shape[0]
    x = ws.frames[:n, 1:RECEPTIVE_FIELD]  # columns 0 and 400..511 stay zero
    # Pre-emphasis of the DC-free frame equals pre-emphasis of the raw samples minus
    # (1 - 0.97) * mean at every position; position 0 has window weight 0, so it drops out.
    torch.sub(frames[:, 1:], frames[:, :-1], alpha=PREEMPHASIS, out=x)
    x.sub_(dc[:, None]).mul_(window)
    spec = ws.spec[:n]
    torch.fft.rfft(ws.frames[:n], out=spec)
    power = torch.view_as_real(spec).reshape(n, -1).square_()  # (n, 514): re^2, im^2
    mel = torch.matmul(power, banks2, out=ws.mel[:n])[:, :NUM_MEL_BINS]  # (n, 23)
    torch.matmul(mel.clamp_min_(_LOG_FLOOR).log_(), dct, out=out)


def _frame_means(wav: torch.Tensor, frames: int) -> torch.Tensor:
    """Mean of every frame, from sums of 80-sample blocks (80 divides both 400 and 160)."""
    step = 80
    blocks = wav[: (frames - 1) * MFCC_HOP + RECEPTIVE_FIELD].reshape(-1, step).sum(1)
    per_hop, per_frame = MFCC_HOP // step, RECEPTIVE_FIELD // step
    sums = blocks.unfold(0, per_frame, per_hop).sum(1)  # (frames,)
    return sums / RECEPTIVE_FIELD


def _cepstra_1d(wav: torch.Tensor, frames: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """13 lifted cepstra of one waveform (num_samples,) float32 -> (frames, 13)."""
    if out is None:
        out = torch.empty(frames, NUM_CEPS, dtype=torch.float32, device=wav.device)
    if frames == 0:
        return out
    wav = wav[: (frames - 1) * MFCC_HOP + RECEPTIVE_FIELD]
    dc = (1.0 - PREEMPHASIS) * _frame_means(wav, frames)
    frame_view = wav.unfold(0, RECEPTIVE_FIELD, MFCC_HOP)  # (frames, 400), no copy
    for s in range(0, frames, _BLOCK_FRAMES):
        e = min(s + _BLOCK_FRAMES, frames)
        _cepstra_block(frame_view[s:e], dc[s:e], out[s:e])
    return out


def _deltas_1d(feats: torch.Tensor, out: torch.Tensor) -> None:
    """Regression deltas (window 2) of (frames, dim) into `out`, edge frames replicated."""
    frames = feats.shape[0]
    padded = torch.cat(
        [feats[:1].expand(DELTA_WINDOW, -1), feats, feats[-1:].expand(DELTA_WINDOW, -1)]
    )  # (frames + 4, dim)
    norm = 2.0 * sum(n * n for n in range(1, DELTA_WINDOW + 1))
    c = DELTA_WINDOW
    torch.sub(padded[c + 1 : c + 1 + frames], padded[c - 1 : c - 1 + frames], out=out)
    for n in range(2, DELTA_WINDOW + 1):
        out.add_(padded[c + n : c + n + frames], alpha=n)
        out.sub_(padded[c - n : c - n + frames], alpha=n)
    out.div_(norm)


def compute_deltas(feats: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Regression deltas over time (window 2) with each utterance's own edge frames
    replicated, as torchaudio `compute_deltas` (mode="replicate") on each utterance alone.
    feats: (batch, frames, dim) -> same shape; frames past a row's length are zero."""
    batch, frames, _ = feats.shape
    lengths = [frames] * batch if frame_lengths is None else [int(n) for n in frame_lengths]
    out = torch.zeros_like(feats)
    for b, n in enumerate(lengths):
        if n > 0:
            _deltas_1d(feats[b, :n], out[b, :n])
    return out


def _mfcc_1d(wav: torch.Tensor, frames: int, out: torch.Tensor) -> None:
    """39-d MFCC of one waveform into `out` (frames, 39)."""
    ceps = _cepstra_1d(wav, frames)  # (frames, 13)
    out[:, :NUM_CEPS] = ceps
    deltas = out[:, NUM_CEPS : 2 * NUM_CEPS]
    _deltas_1d(ceps, deltas)
    _deltas_1d(deltas, out[:, 2 * NUM_CEPS :])


def compute_mfcc(
    waveforms: torch.Tensor | np.ndarray, lengths: torch.Tensor | np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """39-d MFCC + deltas at 100 Hz for a batch of 16 kHz waveforms.

    waveforms: (batch, samples) or (samples,) float in [-1, 1] (as soundfile reads it);
    lengths: (batch,) valid samples per row (default: all). Runs on the waveforms' device.
    Returns (feats (batch, frames, 39) float32, frame_lengths (batch,) long); frames past a
    row's length are zero. Frames per row: floor((n - 400) / 160) + 1 (0 below 400 samples)."""
    wav = torch.as_tensor(waveforms)
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2:
        shape = tuple(wav.shape)
        raise ValueError(f"waveforms must be (batch, samples) or (samples,), got {shape}")
    wav = wav.to(torch.float32)
    if lengths is None:
        lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long)
    lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
    if lengths.shape != (wav.shape[0],):
        raise ValueError(f"lengths must have shape ({wav.shape[0]},), got {tuple(lengths.shape)}")
    if bool((lengths > wav.shape[1]).any()) or bool((lengths < 0).any()):
        raise ValueError(f"lengths must lie in [0, {wav.shape[1]}], got {lengths.tolist()}")
    frame_lengths = torch.tensor([mfcc_num_frames(int(n)) for n in lengths], dtype=torch.long)
    max_frames = int(frame_lengths.max()) if len(frame_lengths) else 0
    feats = torch.zeros(wav.shape[0], max_frames, MFCC_DIM, dtype=torch.float32, device=wav.device)
    for b, n in enumerate(frame_lengths.tolist()):
        if n > 0:
            _mfcc_1d(wav[b], n, feats[b, :n])
    return feats, frame_lengths


def mfcc_of_waveform(wav: np.ndarray | torch.Tensor) -> np.ndarray:
    """39-d MFCC of one waveform (num_samples,) -> (frames, 39) float32 numpy array."""
    wav = torch.as_tensor(wav, dtype=torch.float32)
    frames = mfcc_num_frames(wav.shape[0])
    out = torch.empty(frames, MFCC_DIM, dtype=torch.float32, device=wav.device)
    if frames > 0:
        _mfcc_1d(wav, frames, out)
    return out.cpu().numpy()


class MfccExtractor:
    """The feature-store extractor for 39-d MFCC at 100 Hz."""

    dim = MFCC_DIM
    frame_rate_hz = SAMPLE_RATE // MFCC_HOP

    def settings(self) -> dict:
        return {"kind": "mfcc", "dim": MFCC_DIM, "frame_rate_hz": self.frame_rate_hz}

    def num_frames(self, num_samples: int) -> int:
        return mfcc_num_frames(num_samples)

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        return mfcc_of_waveform(wav)
