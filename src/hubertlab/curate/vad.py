"""Voice activity detection of long recordings, read block by block (memory stays bounded for
a 24 h file), with two backends:

- silero: silero-vad's model run on 512-sample windows with its state carried from block to
  block, so the speech probabilities are exactly those of silero's own get_speech_timestamps
  on the whole file; its post-processing (get_speech_timestamps_from_probs) turns them into
  segments.
- energy: 10 ms frame log-energy against an adaptive noise floor (the 10th percentile of each
  second's frames, minimum over a sliding window), then smoothing: silences shorter than
  `min_silence_s` are bridged, speech shorter than `min_speech_s` dropped, `pad_s` of hangover
  added at both ends. No dependency beyond numpy.

`run_vad` writes one JSONL line per manifest row ({fileid, duration, segments}, seconds),
sharded and resumable like the feature store."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hubertlab.constants import SAMPLE_RATE
from hubertlab.curate.resumable import JsonlShardWriter
from hubertlab.curate.speech import FileSpeech
from hubertlab.data.audio import iter_blocks
from hubertlab.data.manifest import Manifest, ManifestRow, read_manifest
from hubertlab.fingerprint import manifest_input
from hubertlab.shards import INPUT_KEY, shard_lock, shard_rows

log = logging.getLogger(__name__)

BACKENDS = ("silero", "energy")
SILERO_WINDOW = 512  # samples at 16 kHz per silero-vad step (32 ms)
ENERGY_HOP = 160  # 10 ms
BLOCK_SAMPLES = SAMPLE_RATE * 64 * 8  # 8.2 min; a multiple of both frame sizes

Segments = list[tuple[float, float]]


@dataclass(frozen=True)
class EnergyVadConfig:
    margin_db: float = 10.0
    """A frame is speech when its energy is this far above the noise floor."""
    floor_window_s: int = 30
    """The noise floor is the lowest per-second 10th percentile within +-window/2 seconds."""
    min_floor_db: float = -80.0
    """Floor of the floor (digital silence would make any noise speech)."""
    min_speech_s: float = 0.2
    min_silence_s: float = 0.3
    pad_s: float = 0.1


@dataclass(frozen=True)
class SileroVadConfig:
    """Arguments of silero-vad's get_speech_timestamps (its defaults)."""

    threshold: float = 0.5
    min_speech_duration_ms: int = 250
    min_silence_duration_ms: int = 100
    speech_pad_ms: int = 30


def load_silero():
    """silero-vad's JIT model. Importing silero_vad calls torch.set_num_threads(1): the
    caller's thread count is put back."""
    import torch  # lazy: silero only; the energy backend and `vad --help` do without torch

    threads = torch.get_num_threads()
    try:
        # lazy: optional (hubertlab[curate]); importing it resets torch's thread count
        from silero_vad import load_silero_vad

        return load_silero_vad()
    finally:
        torch.set_num_threads(threads)


def silero_probs(blocks: Iterable[np.ndarray], model) -> tuple[np.ndarray, int]:
    """Speech probability per 512-sample window (the last one zero-padded) and the number of
    samples, carrying the model state across blocks of any size."""
    import torch  # lazy: silero only; the energy backend and `vad --help` do without torch

    threads = torch.get_num_threads()
    # One 512-sample step is far too small for intra-op threads to pay: run it on one, and
    # give the caller its thread count back.
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            return _silero_loop(blocks, model)
    finally:
        torch.set_num_threads(threads)


def _silero_loop(blocks: Iterable[np.ndarray], model) -> tuple[np.ndarray, int]:
    import torch  # lazy: silero only; the energy backend and `vad --help` do without torch

    model.reset_states()
    probs: list[np.ndarray] = []  # one float32 array per block: 0.5 MB per hour of audio
    carry = np.zeros(0, np.float32)
    total = 0
    for block in blocks:
        total += len(block)
        x = np.concatenate([carry, block]) if carry.size else block
        full = len(x) // SILERO_WINDOW * SILERO_WINDOW
        windows = torch.from_numpy(np.ascontiguousarray(x[:full], dtype=np.float32))
        block_probs = np.empty(full // SILERO_WINDOW, np.float32)
        for i, window in enumerate(windows.view(-1, SILERO_WINDOW)):
            block_probs[i] = model(window, SAMPLE_RATE).item()
        probs.append(block_probs)
        carry = x[full:]
    if carry.size:
        last = np.pad(carry, (0, SILERO_WINDOW - carry.size)).astype(np.float32)
        probs.append(np.array([model(torch.from_numpy(last), SAMPLE_RATE).item()], np.float32))
    return (np.concatenate(probs) if probs else np.zeros(0, np.float32)), total


def silero_segments(probs: np.ndarray, num_samples: int, cfg: SileroVadConfig) -> Segments:
    from silero_vad import get_speech_timestamps_from_probs  # lazy: optional (hubertlab[curate])

    stamps = get_speech_timestamps_from_probs(
        probs.tolist(), sampling_rate=SAMPLE_RATE, audio_length_samples=num_samples, **asdict(cfg)
    )
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def frame_energies_db(blocks: Iterable[np.ndarray], hop: int = ENERGY_HOP) -> np.ndarray:
    """Log-energy (dB re full scale) of consecutive `hop`-sample frames; the last frame may be
    shorter. Independent of the block sizes."""
    out, carry = [], np.zeros(0, np.float32)
    for block in blocks:
        x = np.concatenate([carry, block]) if carry.size else block
        n = len(x) // hop
        if n:
            power = np.mean(np.square(x[: n * hop].reshape(n, hop), dtype=np.float64), axis=1)
            out.append((10 * np.log10(power + 1e-10)).astype(np.float32))
        carry = x[n * hop :]
    if carry.size:
        out.append(np.array([10 * np.log10(np.mean(np.square(carry, dtype=np.float64)) + 1e-10)]))
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def energy_mask(energies_db: np.ndarray, cfg: EnergyVadConfig, frames_per_s: int) -> np.ndarray:
    """Speech frames: energy above the adaptive floor + margin."""
    n = len(energies_db)
    if n == 0:
        return np.zeros(0, bool)
    seconds = -(-n // frames_per_s)
    padded = np.full(seconds * frames_per_s, np.nan, np.float32)
    padded[:n] = energies_db
    per_second = np.nanpercentile(padded.reshape(seconds, frames_per_s), 10, axis=1)
    half = cfg.floor_window_s // 2
    floor = per_second.copy()
    for shift in range(1, half + 1):  # sliding minimum over [-half, +half] seconds
        floor[shift:] = np.minimum(floor[shift:], per_second[:-shift])
        floor[:-shift] = np.minimum(floor[:-shift], per_second[shift:])
    floor = np.maximum(floor, cfg.min_floor_db)
    return energies_db > np.repeat(floor, frames_per_s)[:n] + cfg.margin_db


def mask_to_segments(
    mask: np.ndarray, frame_s: float, duration_s: float, *,
    min_speech_s: float, min_silence_s: float, pad_s: float,
) -> Segments:  # fmt: skip
    """Runs of speech frames as (start, end) seconds: short silences bridged, short speech
    dropped, then padded and clipped to [0, duration_s] (overlaps merged)."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if len(starts) == 0:
        return []
    keep_gap = (starts[1:] - ends[:-1]) * frame_s >= min_silence_s
    starts = np.concatenate([starts[:1], starts[1:][keep_gap]])
    ends = np.concatenate([ends[:-1][keep_gap], ends[-1:]])
    long_enough = (ends - starts) * frame_s >= min_speech_s
    out: Segments = []
    for s, e in zip(starts[long_enough], ends[long_enough], strict=True):
        start, end = max(0.0, s * frame_s - pad_s), min(duration_s, e * frame_s + pad_s)
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def energy_segments(blocks: Iterable[np.ndarray], cfg: EnergyVadConfig) -> tuple[Segments, int]:
    counted = _Counted(blocks)
    energies = frame_energies_db(counted)
    mask = energy_mask(energies, cfg, SAMPLE_RATE // ENERGY_HOP)
    duration_s = counted.total / SAMPLE_RATE
    segments = mask_to_segments(
        mask, ENERGY_HOP / SAMPLE_RATE, duration_s, min_speech_s=cfg.min_speech_s,
        min_silence_s=cfg.min_silence_s, pad_s=cfg.pad_s,
    )  # fmt: skip
    return segments, counted.total


class _Counted:
    """Iterates blocks and counts their samples."""

    def __init__(self, blocks: Iterable[np.ndarray]) -> None:
        self.blocks, self.total = blocks, 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in self.blocks:
            self.total += len(block)
            yield block


Detector = Callable[[Iterable[np.ndarray]], tuple[Segments, int]]


def make_detector(backend: str, config=None) -> tuple[Detector, dict]:
    """blocks -> (segments in seconds, num_samples), and its settings for meta.json."""
    if backend == "energy":
        cfg = config or EnergyVadConfig()
        return (lambda blocks: energy_segments(blocks, cfg)), {"backend": backend, **asdict(cfg)}
    if backend == "silero":
        cfg = config or SileroVadConfig()
        model = load_silero()

        def detect(blocks):
            probs, total = silero_probs(blocks, model)
            return silero_segments(probs, total, cfg), total

        return detect, {"backend": backend, **asdict(cfg)}
    raise ValueError(f"unknown VAD backend {backend!r} (choose from {', '.join(BACKENDS)})")


def row_blocks(row: ManifestRow, root: Path, block_samples: int = BLOCK_SAMPLES):
    """The row's audio (or span) in blocks, decoded block by block."""
    return iter_blocks(
        row.audio_path(root), block_samples, byte_offset=row.byte_offset,
        byte_size=row.byte_size, start=row.start or 0,
        num_samples=None if row.start is None else row.num_samples,
    )  # fmt: skip


def run_vad(
    manifest: Manifest | str | Path, out_dir: str | Path, *, backend: str = "silero",
    config=None, shard: int = 0, num_shards: int = 1, block_samples: int = BLOCK_SAMPLES,
) -> Path:  # fmt: skip
    """Speech segments of shard `shard` of `num_shards` of `manifest` into `out_dir`; resumes a
    killed run (one committed line per recording), skips a finished shard. Returns the
    shard's JSONL."""
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    rows = shard_rows(manifest, shard, num_shards)
    detect, settings = make_detector(backend, config)
    meta = {"vad": settings, INPUT_KEY: manifest_input(manifest)}
    with shard_lock(out_dir, shard, num_shards):
        return _run_shard(JsonlShardWriter(out_dir, meta, shard, num_shards), rows, manifest,
                          detect, block_samples)  # fmt: skip


def _run_shard(
    writer: JsonlShardWriter, rows: list[ManifestRow], manifest: Manifest, detect: Detector,
    block_samples: int,
) -> Path:  # fmt: skip
    if writer.done:
        log.info("%s: already done, skipped", writer.path.name)
        return writer.path
    committed = [d["fileid"] for d in writer.committed()]
    if committed != [r.fileid for r in rows[: len(committed)]]:
        raise ValueError(
            f"{writer.path}: the recordings done are not the first rows of this shard of "
            f"{manifest.source}; the manifest changed since: delete the shard and rerun"
        )
    for row in rows[writer.lines :]:
        segments, total = detect(row_blocks(row, manifest.root, block_samples))
        if total != row.num_samples:
            raise ValueError(
                f"{manifest.source}: {row.fileid}: audio has {total} samples, manifest says "
                f"{row.num_samples}; rebuild the manifest"
            )
        speech = FileSpeech(row.fileid, total / SAMPLE_RATE, tuple(segments), row.archive)
        writer.append(speech.to_json())
        log.debug("%s: %d segments, %.1f s speech", row.fileid, len(segments), speech.speech_s)
    return writer.finish()


def frame_scores(
    reference: Segments, hypothesis: Segments, duration_s: float, frame_s: float = 0.01
) -> dict[str, float]:
    """Frame-level precision, recall and F1 of speech (frames of `frame_s`, by centre)."""
    centres = (np.arange(int(np.ceil(duration_s / frame_s))) + 0.5) * frame_s

    def mask(segments: Segments) -> np.ndarray:
        m = np.zeros(len(centres), bool)
        for s, e in segments:
            m[np.searchsorted(centres, s) : np.searchsorted(centres, e)] = True
        return m

    ref, hyp = mask(reference), mask(hypothesis)
    tp = float(np.sum(ref & hyp))
    precision = tp / max(float(hyp.sum()), 1.0)
    recall = tp / max(float(ref.sum()), 1.0)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"precision": precision, "recall": recall, "f1": f1}
