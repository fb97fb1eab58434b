"""From frame probabilities to RTTM turns (no model here): overlapping windows averaged into
one track per class, per-class thresholds tuned on dev by frame F1, thresholded frames turned
into turns with short gaps bridged and short turns dropped (segma / VTC 2.x inference).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hubertlab import constants
from hubertlab.constants import FRAME_HOP, RECEPTIVE_FIELD, SAMPLE_RATE
from hubertlab.data.rttm import Turn
from hubertlab.fileio import atomic_write_json
from hubertlab.finetune.f1 import f1_from_counts

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
"""A class's threshold when there is none tuned (predict without thresholds.json, or a class
absent from the dev set)."""
DEFAULT_GRID = tuple(round(x, 2) for x in np.arange(0.05, 0.96, 0.05))
HOP_S = FRAME_HOP / SAMPLE_RATE


def average_windows(
    window_probs: Sequence[np.ndarray], start_frames: Sequence[int], num_frames: int
) -> np.ndarray:
    """(num_frames, classes) mean of the windows' (frames, classes) probabilities, each placed
    at its start frame; frames past num_frames are dropped. Every frame must be covered."""
    if len(window_probs) != len(start_frames) or not window_probs:
        raise ValueError(
            f"{len(window_probs)} windows of probabilities for {len(start_frames)} start frames"
        )
    num_classes = window_probs[0].shape[1]
    total = np.zeros((num_frames, num_classes), dtype=np.float64)
    count = np.zeros(num_frames, dtype=np.int64)
    for probs, start in zip(window_probs, start_frames, strict=True):
        if probs.ndim != 2 or probs.shape[1] != num_classes:
            raise ValueError(
                f"window at frame {start}: shape {probs.shape}, expected (*, {num_classes})"
            )
        stop = min(start + len(probs), num_frames)
        if start < 0 or stop <= start:
            raise ValueError(f"window at frame {start} lies outside the {num_frames} frames")
        total[start:stop] += probs[: stop - start]
        count[start:stop] += 1
    missing = np.flatnonzero(count == 0)
    if missing.size:
        raise ValueError(f"frame {missing[0]} (of {num_frames}) is covered by no window")
    return (total / count[:, None]).astype(np.float32)


def _f1(active: np.ndarray, target: np.ndarray) -> float | None:
    tp = float(np.sum(active & target))
    return f1_from_counts(tp, float(np.sum(active)) - tp, float(np.sum(target)) - tp)


def tune_thresholds(
    probs: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    classes: Sequence[str],
    *,
    ignore: Sequence[np.ndarray] | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
) -> dict[str, dict[str, float]]:
    """Per class, the threshold of `grid` with the best frame F1 over all dev files pooled
    ({"KCHI": {"threshold", "f1"}, ...}); ties go to the threshold nearest 0.5. A class with
    no dev frame keeps DEFAULT_THRESHOLD with f1 None and a warning: its F1 is 0 / 0 at a
    threshold that predicts nothing, which is no evidence for any threshold."""
    keep = [None] * len(probs) if ignore is None else [~m for m in ignore]
    p = np.concatenate([x if k is None else x[k] for x, k in zip(probs, keep, strict=True)])
    t = np.concatenate([x if k is None else x[k] for x, k in zip(targets, keep, strict=True)])
    if p.shape != t.shape or p.shape[1] != len(classes):
        raise ValueError(
            f"probabilities {p.shape} and targets {t.shape} for {len(classes)} classes"
        )
    if not len(p):  # every F1 would be 0 / 0: thresholds 0.5 "tuned" to f1 1.0 on nothing
        raise ValueError("no scored dev frame to tune the thresholds on")
    result = {}
    order = sorted(grid, key=lambda g: abs(g - 0.5))
    for c, name in enumerate(classes):
        target = t[:, c] > 0.5
        if not target.any():
            log.warning(
                "class %s has no frame in the dev set: its threshold stays at %g (not tuned; "
                "its F1 is undefined)", name, DEFAULT_THRESHOLD,
            )  # fmt: skip
            result[name] = {"threshold": DEFAULT_THRESHOLD, "f1": None}
            continue
        scores = {g: _f1(p[:, c] >= g, target) for g in order}
        best = max(order, key=lambda g: scores[g])  # max keeps the first (nearest 0.5) on ties
        result[name] = {"threshold": float(best), "f1": scores[best]}
    return result


def save_thresholds(thresholds: dict[str, dict[str, float]], path: str | Path) -> None:
    atomic_write_json(path, {"thresholds": thresholds})


def load_thresholds(path: str | Path, classes: Sequence[str]) -> np.ndarray:
    """(classes,) thresholds in class order from a save_thresholds file."""
    path = Path(path)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))["thresholds"]
        values = []
        for name in classes:
            value = float(table[name]["threshold"])
            if not 0 <= value <= 1:
                raise ValueError(f"{path}: thresholds.{name}: {value} is not in [0, 1]")
            values.append(value)
    except KeyError as e:
        raise ValueError(
            f"{path}: missing key {e} (expected thresholds.<class>.threshold)"
        ) from None
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path}: not a thresholds file: {e}") from None
    return np.array(values, dtype=np.float32)


def frame_runs(active: np.ndarray) -> list[tuple[int, int]]:
    """[(first, last + 1)] of the runs of True in a (frames,) bool array."""
    padded = np.concatenate([[False], active, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def run_to_seconds(first: int, stop: int) -> tuple[float, float]:
    """Time span of frames [first, stop) that inverts the targets' overlap rule: a turn
    [a, b) switches on frames k with 0.02 k - 0.025 < a ... b > 0.02 k, so the middle of
    each edge's possible range is taken (error <= 10 ms at each end)."""
    window_s = RECEPTIVE_FIELD / SAMPLE_RATE
    onset = first * HOP_S + window_s - HOP_S / 2  # 0.02 first + 0.015
    offset = (stop - 1) * HOP_S + HOP_S / 2  # 0.02 last + 0.01
    return onset, offset


def frames_to_turns(
    active: np.ndarray,
    classes: Sequence[str],
    fileid: str,
    *,
    min_gap_s: float = 0.1,
    min_duration_s: float = 0.1,
) -> list[Turn]:
    """Turns of a (frames, classes) bool array: same-class gaps < min_gap_s bridged first,
    then turns < min_duration_s dropped. Sorted by onset."""
    turns = []
    for c, name in enumerate(classes):
        spans: list[list[float]] = []
        for first, stop in frame_runs(active[:, c]):
            onset, offset = run_to_seconds(first, stop)
            if spans and onset - spans[-1][1] < min_gap_s:
                spans[-1][1] = max(spans[-1][1], offset)
            else:
                spans.append([onset, offset])
        for onset, offset in spans:
            onset = max(onset, 0.0)
            if offset - onset >= min_duration_s and offset > onset:
                turns.append(Turn(fileid, round(onset, 6), round(offset - onset, 6), name))
    return sorted(turns, key=lambda t: (t.onset_s, t.label))


def decode_recording(
    window_probs: Sequence[np.ndarray],
    start_samples: Sequence[int],
    num_samples: int,
    thresholds: np.ndarray,
    classes: Sequence[str],
    fileid: str,
    *,
    min_gap_s: float = 0.1,
    min_duration_s: float = 0.1,
) -> list[Turn]:
    """Turns of one recording from its windows' (frames, classes) probabilities (windows from
    windows.sliding_window_starts): averaged, thresholded per class, turned into turns."""
    if any(s % FRAME_HOP for s in start_samples):
        raise ValueError(f"{fileid}: window starts must be multiples of {FRAME_HOP} samples")
    track = average_windows(
        window_probs, [s // FRAME_HOP for s in start_samples], constants.num_frames(num_samples)
    )
    active = track >= np.asarray(thresholds, dtype=np.float32)[None, :]
    return frames_to_turns(
        active, classes, fileid, min_gap_s=min_gap_s, min_duration_s=min_duration_s
    )
