"""Running a fine-tuned model on data: VTC on recordings of any length (windows with 75 %
overlap, read by seek, frame probabilities averaged, thresholds, turns: finetune.postprocess),
threshold tuning on dev, and CTC greedy transcription of a manifest.

Each window is run with its true length, so the zero padding past a recording's end never
reaches a frame that is kept."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from hubertlab.constants import FRAME_HOP, RECEPTIVE_FIELD, SAMPLE_RATE, num_frames
from hubertlab.data.manifest import Manifest, check_manifest_audio
from hubertlab.data.rttm import Turn
from hubertlab.data.text import CharVocab, greedy_ctc_texts
from hubertlab.data.windows import (
    Recording,
    read_window,
    sliding_window_starts,
    window_and_hop,
)
from hubertlab.finetune.postprocess import average_windows, decode_recording, tune_thresholds

log = logging.getLogger(__name__)

WINDOW_SAMPLES, HOP_SAMPLES = window_and_hop(4.0)  # 75 % overlap of 4 s windows


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def window_probabilities(
    model: torch.nn.Module,
    path,
    num_samples: int,
    *,
    window_samples: int = WINDOW_SAMPLES,
    hop_samples: int = HOP_SAMPLES,
    batch_size: int = 16,
) -> tuple[list[np.ndarray], list[int]]:
    """Sigmoid probabilities (frames, classes) of every window of a recording, and the
    windows' start samples (windows.sliding_window_starts)."""
    device = next(model.parameters()).device
    starts = sliding_window_starts(
        num_samples, window_samples=window_samples, hop_samples=hop_samples
    )
    probs: list[np.ndarray] = []
    for chunk in _batches(starts, batch_size):
        wavs = torch.stack(
            [torch.from_numpy(read_window(path, s, window_samples)) for s in chunk]
        )  # (windows, samples)
        lengths = torch.tensor([min(window_samples, num_samples - s) for s in chunk])
        logits, frame_lengths = model(wavs.to(device), lengths.to(device))
        p = torch.sigmoid(logits.float()).cpu().numpy()
        probs += [p[i, : int(n)] for i, n in enumerate(frame_lengths.tolist())]
    return probs, starts


def recording_track(model: torch.nn.Module, recording: Recording, **kwargs) -> np.ndarray:
    """(frames, classes) averaged probabilities of a whole recording."""
    probs, starts = window_probabilities(model, recording.path, recording.num_samples, **kwargs)
    return average_windows(
        probs, [s // FRAME_HOP for s in starts], num_frames(recording.num_samples)
    )


def predict_turns(
    model: torch.nn.Module,
    recordings: Sequence[Recording],
    thresholds: np.ndarray,
    classes: Sequence[str],
    *,
    min_gap_s: float = 0.1,
    min_duration_s: float = 0.1,
    **kwargs,
) -> list[Turn]:
    """Turns of every recording (postprocess.decode_recording), in recording order."""
    model.eval()
    turns: list[Turn] = []
    for recording in recordings:
        probs, starts = window_probabilities(model, recording.path, recording.num_samples, **kwargs)
        turns += decode_recording(
            probs, starts, recording.num_samples, thresholds, classes, recording.fileid,
            min_gap_s=min_gap_s, min_duration_s=min_duration_s,
        )  # fmt: skip
        log.info("%s: %.1f s, %d windows", recording.fileid, recording.num_samples / SAMPLE_RATE,
                 len(starts))  # fmt: skip
    return turns


def tune_on_dev(
    model: torch.nn.Module, recordings: Sequence[Recording], classes: Sequence[str], **kwargs
) -> dict[str, dict[str, float]]:
    """Per-class thresholds with the best frame F1 on the dev recordings, inferred exactly as
    predict_turns infers (overlapping windows averaged); ignored frames left out."""
    model.eval()
    tracks, targets, ignores = [], [], []
    for recording in recordings:
        tracks.append(recording_track(model, recording, **kwargs))
        target, ignore = recording.window_targets(0, len(tracks[-1]), classes)
        targets.append(target)
        ignores.append(ignore)
    return tune_thresholds(tracks, targets, classes, ignore=ignores)


@torch.no_grad()
def transcribe(
    model: torch.nn.Module, manifest: Manifest, vocab: CharVocab, *, batch_seconds: float = 60.0
) -> dict[str, str]:
    """fileid -> greedy CTC text for every row of `manifest` (whole utterances, padded in
    batches of similar length). Rows are checked against their audio first (a row that
    contradicts its file is an error naming the manifest row, before any decoding)."""
    check_manifest_audio(manifest)
    model.eval()
    device = next(model.parameters()).device
    # Files shorter than one frame (25 ms) have nothing to decode.
    texts = {row.fileid: "" for row in manifest if row.num_samples < RECEPTIVE_FIELD}
    order = [i for i in range(len(manifest)) if manifest[i].num_samples >= RECEPTIVE_FIELD]
    order.sort(key=lambda i: manifest[i].num_samples)
    budget = batch_seconds * SAMPLE_RATE
    batch: list[int] = []
    for i in [*order, None]:
        longest = manifest[batch[-1]].num_samples if batch else 0
        if batch and (i is None or (len(batch) + 1) * max(longest, manifest[i].num_samples)
                      > budget):  # fmt: skip
            wavs = [manifest.read_audio(j) for j in batch]
            lengths = torch.tensor([len(w) for w in wavs])
            padded = torch.zeros(len(wavs), int(lengths.max()))
            for b, w in enumerate(wavs):
                padded[b, : len(w)] = torch.from_numpy(w)
            logits, frame_lengths = model(padded.to(device), lengths.to(device))
            decoded = greedy_ctc_texts(logits.float().cpu().numpy(), frame_lengths.tolist(), vocab)
            texts.update({manifest[j].fileid: t for j, t in zip(batch, decoded, strict=True)})
            batch = []
        if i is not None:
            batch.append(i)
    return {row.fileid: texts[row.fileid] for row in manifest}
