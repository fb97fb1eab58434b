"""Reading audio: files or members of an uncompressed tar read by byte offset, mixed down to
mono and resampled to 16 kHz. Sample counts at 16 kHz are defined once, here.

A span [start, start + num_samples) (in samples at 16 kHz) is read by seeking, never by
decoding the whole recording; `iter_blocks` streams a long recording in fixed-size blocks."""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
from collections.abc import Iterator
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


class MemberWindow(io.RawIOBase):
    """A seekable read-only window onto bytes [offset, offset + size) of an open file, so a
    tar member is decoded in place, block by block, without reading it whole."""

    def __init__(self, f, offset: int, size: int) -> None:
        self._f, self._offset, self._size, self._pos = f, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = min(max(0, base + pos), self._size)
        return self._pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._offset + self._pos)
        data = self._f.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


@contextlib.contextmanager
def _source(path: str | os.PathLike, byte_offset: int | None, byte_size: int | None):
    """A file name, or a window onto one archive member (read without extracting the tar)."""
    if byte_offset is None:
        yield str(path)
        return
    if byte_size is None:
        raise AudioError(f"{path}: byte_offset given without byte_size")
    with open(path, "rb") as f:
        available = os.fstat(f.fileno()).st_size - byte_offset
        if available < byte_size:
            raise AudioError(
                f"{path}@{byte_offset}: archive ends after {max(available, 0)} of {byte_size} bytes"
            )
        yield io.BufferedReader(MemberWindow(f, byte_offset, byte_size), 1 << 16)


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
        with _source(path, byte_offset, byte_size) as source:
            info = sf.info(source)
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
    start: int | None = None,
    num_samples: int | None = None,
    standardize: bool = False,
) -> np.ndarray:
    """Mono float32 waveform at 16 kHz, shape (num_samples,).

    Multi-channel audio is averaged; other rates are resampled with soxr. With `start` and
    `num_samples` (samples at 16 kHz), only that span is decoded (by seeking); a span past the
    end of the audio is an AudioError. With `standardize`, the waveform (or span) gets zero
    mean and unit variance (fairseq's `normalize=True` models)."""
    name = _name(path, byte_offset)
    if (start is None) != (num_samples is None):
        raise AudioError(f"{name}: a span needs both start and num_samples")
    try:
        if start is None:
            with _source(path, byte_offset, byte_size) as source:
                wav, sample_rate = sf.read(source, dtype="float32", always_2d=True)
        else:
            wav, sample_rate, expected = _read_span(
                path, byte_offset, byte_size, start, num_samples
            )
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{name}: cannot decode audio: {e}") from e
    if wav.shape[0] == 0:
        raise AudioError(f"{name}: no audio samples")
    wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if start is not None:
        if sample_rate != SAMPLE_RATE:
            wav = soxr.resample(wav, sample_rate, SAMPLE_RATE).astype(np.float32, copy=False)
        lead, _ = expected
        wav = wav[lead : lead + num_samples]
        if wav.shape[0] < num_samples:  # soxr's last sample, at most
            wav = np.pad(wav, (0, num_samples - wav.shape[0]))
    elif sample_rate != SAMPLE_RATE:
        expected_len = resampled_length(wav.shape[0], sample_rate)
        wav = soxr.resample(wav, sample_rate, SAMPLE_RATE).astype(np.float32, copy=False)
        # soxr may round one sample differently from the header-based count: keep them equal.
        if wav.shape[0] < expected_len:
            wav = np.pad(wav, (0, expected_len - wav.shape[0]))
        wav = wav[:expected_len]
    if not np.isfinite(wav).all():
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    if standardize:
        wav = standardize_waveform(wav)
    return np.ascontiguousarray(wav, dtype=np.float32)


def _read_span(path, byte_offset, byte_size, start: int, num_samples: int):
    """Decode the native frames covering a 16 kHz span. Returns (frames, sample_rate,
    (lead, total)): the span starts `lead` samples into the resampled frames."""
    name = _name(path, byte_offset)
    if start < 0 or num_samples <= 0:
        raise AudioError(f"{name}: bad span start={start} num_samples={num_samples}")
    with _source(path, byte_offset, byte_size) as source, sf.SoundFile(source) as f:
        rate, frames = f.samplerate, f.frames
        total = resampled_length(frames, rate)
        if start + num_samples > total:
            raise AudioError(
                f"{name}: span [{start}, {start + num_samples}) goes past the end of the "
                f"audio ({total} samples at 16 kHz)"
            )
        if rate == SAMPLE_RATE:
            f.seek(start)
            return f.read(num_samples, dtype="float32", always_2d=True), rate, (0, num_samples)
        first, lead = _span_start(start, rate)
        last = min(frames, math.ceil((start + num_samples) * rate / SAMPLE_RATE) + rate // 100)
        f.seek(first)
        wav = f.read(last - first, dtype="float32", always_2d=True)
    return wav, rate, (lead, total)


def _span_start(start: int, rate: int) -> tuple[int, int]:
    """(first native frame, 16 kHz samples to drop) to decode a span from `start`: a frame that
    maps to a whole 16 kHz sample, 10 ms early so the resampler's edge stays outside."""
    if rate == SAMPLE_RATE:
        return start, 0
    g = math.gcd(rate, SAMPLE_RATE)
    in_step, out_step = rate // g, SAMPLE_RATE // g
    k = max(0, start // out_step - -(-(SAMPLE_RATE // 100) // out_step))
    return k * in_step, start - k * out_step


def iter_blocks(
    path: str | os.PathLike,
    block_samples: int,
    *,
    byte_offset: int | None = None,
    byte_size: int | None = None,
    start: int = 0,
    num_samples: int | None = None,
) -> Iterator[np.ndarray]:
    """A recording (or its span [start, start + num_samples), samples at 16 kHz) as
    consecutive mono float32 blocks at 16 kHz of `block_samples` samples (the last one
    shorter), decoded and resampled block by block: memory stays bounded for recordings of any
    length. The blocks hold exactly the header's sample count (as read_audio)."""
    if block_samples <= 0:
        raise AudioError(f"{path}: block_samples must be > 0, got {block_samples}")
    name = _name(path, byte_offset)
    try:
        with _source(path, byte_offset, byte_size) as source, sf.SoundFile(source) as f:
            rate = f.samplerate
            total = resampled_length(f.frames, rate)
            end = total if num_samples is None else start + num_samples
            if start < 0 or end > total or end <= start:
                raise AudioError(
                    f"{name}: span [{start}, {end}) is empty or goes past the end of the audio "
                    f"({total} samples at 16 kHz)"
                )
            first, skip = _span_start(start, rate)
            f.seek(first)
            yield from _blocks(f, rate, block_samples, skip, end - start, name)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{name}: cannot decode audio: {e}") from e


def _blocks(f, rate: int, block_samples: int, skip: int, wanted: int, name: str):
    """Decode from the current position: drop `skip` samples, yield `wanted` in blocks (the
    resampler's rounding of the last sample is padded with zeros, as read_audio does)."""
    resampler = None if rate == SAMPLE_RATE else soxr.ResampleStream(
        rate, SAMPLE_RATE, 1, dtype="float32"
    )  # fmt: skip
    native_block = max(1, block_samples * rate // SAMPLE_RATE)
    pending = np.zeros(0, np.float32)
    while wanted > 0:
        chunk = f.read(native_block, dtype="float32", always_2d=True)
        last = chunk.shape[0] < native_block
        mono = chunk.mean(axis=1) if chunk.shape[1] > 1 else chunk[:, 0]
        if resampler is not None:
            mono = resampler.resample_chunk(mono, last=last)
        if skip:
            mono, skip = mono[skip:], max(0, skip - len(mono))
        mono = mono[:wanted]
        if last and len(mono) < wanted and wanted - len(mono) <= 2:
            mono = np.pad(mono, (0, wanted - len(mono)))
        if not np.isfinite(mono).all():
            raise AudioError(f"{name}: audio contains NaN or infinite samples")
        wanted -= len(mono)
        pending = np.concatenate([pending, mono]) if pending.size else mono
        while pending.shape[0] >= block_samples:
            yield np.ascontiguousarray(pending[:block_samples])
            pending = pending[block_samples:]
        if last:
            break
    if pending.shape[0]:
        yield np.ascontiguousarray(pending)


def standardize_waveform(wav: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per utterance (as fairseq's layer_norm on the waveform)."""
    wav = wav.astype(np.float32, copy=False)
    return (wav - wav.mean()) / np.sqrt(wav.var() + 1e-5)


def write_audio(path: str | Path, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM (wav/flac by extension)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(wav, dtype=np.float32), sample_rate, subtype="PCM_16")
