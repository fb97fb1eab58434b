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
    window = torch.tensor(povey_window(), dtype=torch.float32, device=device)
    # Only FFT bins 1..255 carry mel weight (bin 0 is below 20 Hz, 256 is the Nyquist edge);
    # each bin is listed twice so the mel matmul reads (re^2, im^2) pairs without a sum.
    banks = kaldi_mel_banks()[1 : FFT_SIZE // 2]
    banks2 = torch.tensor(np.repeat(banks, 2, axis=0), dtype=torch.float32, device=device)
    dct = torch.tensor(lifted_dct(), dtype=torch.float32, device=device)
    return window, banks2, dct


def _cepstra_1d(wav: torch.Tensor, frames: int) -> torch.Tensor:
    """13 lifted cepstra of one waveform (num_samples,) float32 -> (frames, 13)."""
    window, banks2, dct = _constants(wav.device)
    out = torch.empty(frames, NUM_CEPS, dtype=torch.float32, device=wav.device)
    if frames == 0:
        return out
    used = (frames - 1) * MFCC_HOP + RECEPTIVE_FIELD
    wav = wav[:used]
    # DC offset of every frame from a float64 cumulative sum: O(samples), not O(frames * 400).
    csum = torch.nn.functional.pad(torch.cumsum(wav.double(), 0), (1, 0))
    starts = torch.arange(frames, device=wav.device) * MFCC_HOP
    means = ((csum[starts + RECEPTIVE_FIELD] - csum[starts]) / RECEPTIVE_FIELD).float()
    # Pre-emphasis on the DC-free frame equals pre-emphasis of the raw samples minus
    # (1 - 0.97) * mean at every position; position 0 has window weight 0, so it drops out.
    emph = wav[1:] - PREEMPHASIS * wav[:-1]  # emph[k] belongs to sample k + 1
    emph_frames = emph.unfold(0, RECEPTIVE_FIELD - 1, MFCC_HOP)  # (frames, 399) view
    dc = (1.0 - PREEMPHASIS) * means
    w = window[1:]
    block = min(frames, _BLOCK_FRAMES)
    buf = torch.zeros(block, FFT_SIZE, dtype=torch.float32, device=wav.device)
    for s in range(0, frames, block):
        e = min(s + block, frames)
        n = e - s
        x = buf[:n, 1:RECEPTIVE_FIELD]
        torch.sub(emph_frames[s:e], dc[s:e, None], out=x)
        x.mul_(w)
        spec = torch.fft.rfft(buf[:n])[:, 1 : FFT_SIZE // 2]  # (n, 255) complex
        power = torch.view_as_real(spec).reshape(n, -1).square()  # (n, 510)
        mel = (power @ banks2).clamp_min_(_LOG_FLOOR).log_()  # (n, 23)
        torch.matmul(mel, dct, out=out[s:e])
    return out


def compute_deltas(feats: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """Regression deltas over time (window 2) with each utterance's own edge frames
    replicated (torchaudio `compute_deltas`, mode="replicate"). feats: (batch, frames, dim)."""
    batch, frames, _ = feats.shape
    t = torch.arange(frames, device=feats.device)
    last = (frame_lengths.to(feats.device).clamp_min(1) - 1)[:, None]  # (batch, 1)
    norm = 2 * sum(n * n for n in range(1, DELTA_WINDOW + 1))
    out = torch.zeros_like(feats)
    for n in range(1, DELTA_WINDOW + 1):
        ahead = torch.minimum(t[None] + n, last).clamp_min(0)  # (batch, frames)
        behind = torch.minimum((t - n).clamp_min(0)[None], last)
        gather = lambda idx: feats.gather(1, idx[..., None].expand(-1, -1, feats.shape[2]))  # noqa: E731
        out += n * (gather(ahead) - gather(behind))
    return out / norm


def compute_mfcc(
    waveforms: torch.Tensor | np.ndarray, lengths: torch.Tensor | np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """39-d MFCC + deltas at 100 Hz for a batch of 16 kHz waveforms.

    waveforms: (batch, samples) or (samples,) float in [-1, 1] (as soundfile reads it);
    lengths: (batch,) valid samples per row (default: all). Runs on the waveforms' device.
    Returns (feats (batch, frames, 39) float32, frame_lengths (batch,) long); frames past a
    row's length are zero. Frame count per row: floor((n - 400) / 160) + 1."""
    wav = torch.as_tensor(waveforms)
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2:
        raise ValueError(f"waveforms must be (batch, samples) or (samples,), got {tuple(wav.shape)}")
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
    ceps = torch.zeros(wav.shape[0], max_frames, NUM_CEPS, dtype=torch.float32, device=wav.device)
    for b, n in enumerate(frame_lengths.tolist()):
        ceps[b, :n] = _cepstra_1d(wav[b], n)
    frame_lengths_dev = frame_lengths.to(wav.device)
    deltas = compute_deltas(ceps, frame_lengths_dev)
    ddeltas = compute_deltas(deltas, frame_lengths_dev)
    feats = torch.cat([ceps, deltas, ddeltas], dim=-1)  # (batch, frames, 39)
    pad = torch.arange(max_frames, device=wav.device)[None] >= frame_lengths_dev[:, None]
    feats[pad] = 0.0
    return feats, frame_lengths


def mfcc_of_waveform(wav: np.ndarray | torch.Tensor) -> np.ndarray:
    """39-d MFCC of one waveform (num_samples,) -> (frames, 39) float32 numpy array."""
    feats, _ = compute_mfcc(torch.as_tensor(wav)[None])
    return feats[0].cpu().numpy()
