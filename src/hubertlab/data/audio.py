"""Reading audio: files or members of an uncompressed tar read by byte offset, mixed down to
mono and resampled to 16 kHz. Sample counts at 16 kHz are defined once, here."""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from hubertlab.constants import SAMPLE_RATE

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff", ".au", ".sph")


class AudioError(ValueError):
    """An audio file or archive member cannot be read; the message names it."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    num_frames: int  # at the file's own sample rate
    channels: int

    @property
    def num_samples(self) -> int:
        """Length after resampling to 16 kHz."""
        return resampled_length(self.num_frames, self.sample_rate)


def resampled_length(num_frames: int, sample_rate: int) -> int:
    """Samples at 16 kHz for `num_frames` at `sample_rate` (soxr's output length)."""
    if sample_rate == SAMPLE_RATE:
        return num_frames
    return math.ceil(num_frames * SAMPLE_RATE / sample_rate)


def _source(path: str | os.PathLike, byte_offset: int | None, byte_size: int | None):
    """A file name, or the bytes of one archive member (read without extracting the tar)."""
    if byte_offset is None:
        return str(path)
    if byte_size is None:
        raise AudioError(f"{path}: byte_offset given without byte_size")
    with open(path, "rb") as f:
        f.seek(byte_offset)
        data = f.read(byte_size)
    if len(data) != byte_size:
        raise AudioError(
            f"{path}@{byte_offset}: archive ends after {len(data)} of {byte_size} bytes"
        )
    return io.BytesIO(data)


def _name(path, byte_offset) -> str:
    return f"{path}" if byte_offset is None else f"{path}@{byte_offset}"


def _wav_info(path: str | os.PathLike) -> AudioInfo | None:
    """Parse a plain PCM/float RIFF header in Python: 3x faster than libsndfile for the
    manifest scan. None for anything unusual (libsndfile then decides)."""
    with open(path, "rb") as f:
        head = f.read(4096)
        file_size = os.fstat(f.fileno()).st_size
    if len(head) < 44 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        chunk_id, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk_id == b"fmt " and pos + 24 <= len(head):
            tag, channels, rate, _, block_align = struct.unpack_from("<HHIIH", head, pos + 8)
            fmt = (tag, channels, rate, block_align)
        elif chunk_id == b"data":
            if fmt is None or fmt[0] not in (1, 3) or fmt[1] == 0 or fmt[3] == 0:
                return None
            # A truncated or streamed file declares more data than it holds.
            frames = min(size, file_size - pos - 8) // fmt[3]
            return AudioInfo(sample_rate=fmt[2], num_frames=frames, channels=fmt[1])
        pos += 8 + size + (size & 1)
    return None


def audio_info(
    path: str | os.PathLike, *, byte_offset: int | None = None, byte_size: int | None = None
) -> AudioInfo:
    """Sample rate, length and channels from the header, without decoding the audio."""
    if byte_offset is None and str(path).lower().endswith(".wav"):
        try:
            info = _wav_info(path)
        except OSError as e:
            raise AudioError(f"{path}: cannot read audio header: {e}") from e
        if info is not None and info.num_frames > 0:
            return info
    try:
        info = sf.info(_source(path, byte_offset, byte_size))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{_name(path, byte_offset)}: cannot read audio header: {e}") from e
    if info.frames <= 0:
        raise AudioError(f"{_name(path, byte_offset)}: no audio samples")
    return AudioInfo(sample_rate=info.samplerate, num_frames=info.frames, channels=info.channels)


def read_audio(
    path: str | os.PathLike,
    *,
    byte_offset: int | None = None,
    byte_size: int | None = None,
    standardize: bool = False,
) -> np.ndarray:
    """Mono float32 waveform at 16 kHz, shape (num_samples,).

    Multi-channel audio is averaged; other rates are resampled with soxr. With `standardize`,
    the waveform gets zero mean and unit variance (fairseq's `normalize=True` models)."""
    name = _name(path, byte_offset)
    try:
        wav, sample_rate = sf.read(
            _source(path, byte_offset, byte_size), dtype="float32", always_2d=True
        )
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{name}: cannot decode audio: {e}") from e
    if wav.shape[0] == 0:
        raise AudioError(f"{name}: no audio samples")
    wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if sample_rate != SAMPLE_RATE:
        expected = resampled_length(wav.shape[0], sample_rate)
        wav = soxr.resample(wav, sample_rate, SAMPLE_RATE).astype(np.float32, copy=False)
        # soxr may round one sample differently from the header-based count: keep them equal.
        if wav.shape[0] < expected:
            wav = np.pad(wav, (0, expected - wav.shape[0]))
        wav = wav[:expected]
    if not np.isfinite(wav).all():
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    if standardize:
        wav = standardize_waveform(wav)
    return np.ascontiguousarray(wav, dtype=np.float32)


def standardize_waveform(wav: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per utterance (as fairseq's layer_norm on the waveform)."""
    wav = wav.astype(np.float32, copy=False)
    return (wav - wav.mean()) / np.sqrt(wav.var() + 1e-5)


def write_audio(path: str | Path, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM (wav/flac by extension)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(wav, dtype=np.float32), sample_rate, subtype="PCM_16")
