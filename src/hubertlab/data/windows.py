"""Training windows for frame classification: random fixed-length windows over recordings,
starting on the frame grid (multiples of 320 samples) so window frame i is recording frame
start / 320 + i exactly, with their multi-label targets and ignore mask.

Audio is read by seek (soundfile), never whole: recordings may be hours long.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from hubertlab.constants import FRAME_HOP, RECEPTIVE_FIELD, SAMPLE_RATE, num_frames
from hubertlab.data.audio import standardize_waveform
from hubertlab.data.frame_targets import frame_targets, ignore_mask
from hubertlab.data.manifest import ManifestRow, check_row_audio, read_manifest
from hubertlab.data.rttm import VTC_CLASSES, Turn


@dataclass(frozen=True)
class Recording:
    """One long recording with its labelled turns and scored regions (None: all of it)."""

    fileid: str
    path: Path
    num_samples: int
    turns: tuple[Turn, ...] = ()
    uem: tuple[tuple[float, float], ...] | None = None
    _onsets_s: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_onsets_s", np.array([t.onset_s for t in self.turns]))

    def window_targets(
        self, start_frame: int, frames: int, classes: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Targets (frames, classes) and ignore mask (frames,) of recording frames
        [start_frame, start_frame + frames); frames past the recording's end are ignored."""
        start_s = start_frame * FRAME_HOP / SAMPLE_RATE
        end_s = start_s + ((frames - 1) * FRAME_HOP + RECEPTIVE_FIELD) / SAMPLE_RATE
        # Turns starting before the window's end; the later filter drops those ended before it.
        candidates = self.turns[: int(np.searchsorted(self._onsets_s, end_s))]
        shifted = [
            Turn(t.fileid, t.onset_s - start_s, t.duration_s, t.label)
            for t in candidates
            if t.offset_s > start_s
        ]
        targets = frame_targets(shifted, frames, classes)  # turns cut at frame 0
        uem = None
        if self.uem is not None:
            uem = [(a - start_s, b - start_s) for a, b in self.uem]
        ignore = ignore_mask(uem, frames)
        ignore[max(num_frames(self.num_samples) - start_frame, 0) :] = True
        return targets, ignore

    def scored_frames(self) -> int:
        """Frames of the recording inside its scored regions (all of them without UEM)."""
        return int(np.count_nonzero(~ignore_mask(self.uem, num_frames(self.num_samples))))


def read_window(path: str | Path, start: int, num_samples: int) -> np.ndarray:
    """Samples [start, start + num_samples) of a 16 kHz file, mono float32, zero-padded past
    the end; only those samples are read."""
    try:
        with sf.SoundFile(str(path)) as f:
            if f.samplerate != SAMPLE_RATE:
                raise ValueError(
                    f"{path}: sample rate {f.samplerate}, windows need {SAMPLE_RATE} Hz audio"
                )
            f.seek(min(start, f.frames))
            wav = f.read(num_samples, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise ValueError(f"{path}: cannot read audio: {e}") from e
    wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if len(wav) < num_samples:
        wav = np.pad(wav, (0, num_samples - len(wav)))
    return wav


def check_recording_row(row: ManifestRow, root: Path, where: str) -> Path:
    """The audio file of a manifest row, checked against its header as `features` checks
    rows against the audio: a whole 16 kHz file (RTTM times count from its start) of exactly
    num_samples samples and at least one frame. A row that claims more audio than the file
    holds would be padded with silence (training windows, predictions past the end); one
    that claims less would leave the rest unlabelled."""
    if row.byte_offset is not None:
        raise ValueError(f"{where}: windows need plain files, not tar members")
    if row.start is not None:
        raise ValueError(
            f"{where}: a span (start {row.start}); windows and RTTM times need whole "
            "recordings: list the files themselves"
        )
    path = row.audio_path(root)
    info = check_row_audio(row, root, where)  # AudioError names the file
    if info.sample_rate != SAMPLE_RATE:
        raise ValueError(f"{where}: {path} is {info.sample_rate} Hz, windows need 16 kHz audio")
    if row.num_samples < RECEPTIVE_FIELD:
        raise ValueError(
            f"{where}: too short: {row.num_samples} samples, one frame needs "
            f"{RECEPTIVE_FIELD} ({1000 * RECEPTIVE_FIELD // SAMPLE_RATE} ms)"
        )
    return path


def load_recordings(
    manifest: str | Path,
    turns: Mapping[str, Sequence[Turn]],
    uem: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> list[Recording]:
    """Recordings of a manifest with their turns (a file without turns has no speech). Turns
    or UEM regions of a fileid the manifest lacks are an error: ids probably do not match;
    so is a row that contradicts its audio (check_recording_row)."""
    rows = read_manifest(manifest)
    known = {row.fileid for row in rows}
    for what, ids in (("RTTM", turns), ("UEM", uem or {})):
        stray = sorted(set(ids) - known)
        if stray:
            raise ValueError(
                f"{manifest}: {len(stray)} {what} fileids are not in the manifest, "
                f"e.g. {stray[0]!r}"
            )
    recordings = []
    for number, row in enumerate(rows, 1):
        path = check_recording_row(row, rows.root, f"{manifest}: row {number} ({row.fileid!r})")
        regions = None if uem is None else tuple(uem.get(row.fileid, ()))
        recordings.append(
            Recording(
                fileid=row.fileid,
                path=path,
                num_samples=row.num_samples,
                turns=tuple(sorted(turns.get(row.fileid, ()))),
                uem=regions,
            )
        )
    return recordings


class WindowDataset(torch.utils.data.Dataset):
    """Random windows over recordings: item i of epoch e is a pure function of (seed, e, i).

    Returns (waveform (window_samples,), targets (frames, classes), ignore (frames,) bool).
    Recordings are drawn in proportion to their length; a window starts at a multiple of 320
    samples; a recording shorter than a window is zero-padded and its missing frames ignored."""

    def __init__(
        self,
        recordings: Sequence[Recording],
        *,
        classes: Sequence[str] = VTC_CLASSES,
        window_s: float = 4.0,
        windows_per_epoch: int | None = None,
        seed: int = 0,
        standardize: bool = False,
    ) -> None:
        if not recordings:
            raise ValueError("WindowDataset needs at least one recording")
        self.window_samples, _ = window_and_hop(window_s)
        self.frames = num_frames(self.window_samples)
        if self.frames < 1:
            raise ValueError(f"window_s {window_s} is shorter than one frame (25 ms)")
        self.recordings = list(recordings)
        self.classes = tuple(classes)
        lengths = np.array([r.num_samples for r in self.recordings], dtype=np.float64)
        self._cumulative = np.cumsum(lengths) / lengths.sum()
        if windows_per_epoch is None:  # about one pass over the audio
            windows_per_epoch = max(1, math.ceil(lengths.sum() / self.window_samples))
        self.windows_per_epoch = windows_per_epoch
        self.seed = seed
        self.standardize = standardize
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        """All a resume needs: windows are a pure function of (seed, epoch, index)."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"window seed {state['seed']} in the checkpoint, {self.seed} now")
        self.epoch = int(state["epoch"])

    def __len__(self) -> int:
        return self.windows_per_epoch

    def window(self, index: int) -> tuple[Recording, int]:
        """The recording and start sample of window `index` in the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = int(np.searchsorted(self._cumulative, rng.random(), side="right"))
        recording = self.recordings[min(k, len(self.recordings) - 1)]
        last_start_frame = max(recording.num_samples - self.window_samples, 0) // FRAME_HOP
        return recording, int(rng.integers(0, last_start_frame + 1)) * FRAME_HOP

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)
        recording, start = self.window(index)
        wav = read_window(recording.path, start, self.window_samples)
        if self.standardize:
            wav = standardize_waveform(wav)
        targets, ignore = recording.window_targets(start // FRAME_HOP, self.frames, self.classes)
        return torch.from_numpy(wav), torch.from_numpy(targets), torch.from_numpy(ignore)


def window_and_hop(window_s: float, overlap: float = 0.75) -> tuple[int, int]:
    """Samples of a `window_s`-second window and the hop between windows that overlap by
    `overlap`, on the frame grid and at least one frame. The one place training (its windows),
    threshold tuning and predict (their 75 % overlap) take them from, so that the thresholds
    are tuned on windows exactly as predict runs them."""
    window = round(window_s * SAMPLE_RATE)
    hop = max(FRAME_HOP, round(window * (1 - overlap) / FRAME_HOP) * FRAME_HOP)
    return window, hop


def sliding_window_starts(
    num_samples: int, *, window_samples: int = 4 * SAMPLE_RATE, hop_samples: int = SAMPLE_RATE
) -> list[int]:
    """Start samples of inference windows (4 s, 75 % overlap by default) on the frame grid;
    the last window is moved to cover the recording's last frame (it may run < 320 samples
    past the end: pad with zeros). A short recording gets one window at 0."""
    if hop_samples % FRAME_HOP or hop_samples <= 0:
        raise ValueError(f"hop_samples must be a positive multiple of {FRAME_HOP}")
    starts = list(range(0, max(num_samples - window_samples, 0) + 1, hop_samples))
    last = math.ceil(max(num_samples - window_samples, 0) / FRAME_HOP) * FRAME_HOP
    if starts[-1] < last:
        starts.append(last)
    return starts
