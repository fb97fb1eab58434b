"""The VTC inference chain without a model, on the demo VTC corpus: a noisy oracle gives
window probabilities; averaged over 75 %-overlapping windows, thresholds tuned on dev, turns
decoded on test and scored against the reference RTTM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")
pytest.importorskip("pyannote.metrics")

from hubertlab.data.rttm import (  # noqa: E402
    VTC_CLASSES,
    read_rttm_files,
    read_uem,
    write_rttm,
)
from hubertlab.data.windows import load_recordings, sliding_window_starts  # noqa: E402
from hubertlab.demo.vtc import VtcCorpusConfig, build_vtc_corpus  # noqa: E402
from hubertlab.evaluate.classification import detection_scores, macro_f1  # noqa: E402
from hubertlab.finetune.postprocess import (  # noqa: E402
    average_windows,
    decode_recording,
    load_thresholds,
    save_thresholds,
    tune_thresholds,
)


def _oracle_windows(recording, rng):
    """Per window: reference targets + noise, as a model that is right on average would be."""
    starts = sliding_window_starts(recording.num_samples)
    windows = []
    for start in starts:
        targets, _ = recording.window_targets(start // 320, 199, VTC_CLASSES)
        noisy = 0.15 + 0.6 * targets + rng.normal(0, 0.25, targets.shape)
        windows.append(np.clip(noisy, 0, 1).astype(np.float32))
    return windows, starts


def _split(corpus: Path, split: str):
    turns = read_rttm_files(corpus / split / "reference.rttm", classes=VTC_CLASSES)
    uem = read_uem(corpus / split / "all.uem")
    return load_recordings(corpus / split / "manifest.csv", turns, uem), turns, uem


def test_noisy_oracle_scores_high_after_averaging(tmp_path: Path):
    corpus = tmp_path / "vtc"
    build_vtc_corpus(corpus, VtcCorpusConfig(minutes=1.5, recording_minutes=0.25, seed=2))
    rng = np.random.default_rng(0)
    dev, _, _ = _split(corpus, "dev")
    probs, targets, ignore = [], [], []
    for recording in dev:
        windows, starts = _oracle_windows(recording, rng)
        frames = (recording.num_samples - 400) // 320 + 1
        probs.append(average_windows(windows, [s // 320 for s in starts], frames))
        t, i = recording.window_targets(0, frames, VTC_CLASSES)
        targets.append(t)
        ignore.append(i)
    tuned = tune_thresholds(probs, targets, VTC_CLASSES, ignore=ignore)
    save_thresholds(tuned, tmp_path / "thresholds.json")
    thresholds = load_thresholds(tmp_path / "thresholds.json", VTC_CLASSES)
    assert all(0.3 <= t <= 0.7 for t in thresholds)

    test, reference, uem = _split(corpus, "test")
    hypothesis = []
    for recording in test:
        windows, starts = _oracle_windows(recording, rng)
        hypothesis += decode_recording(
            windows, starts, recording.num_samples, thresholds, VTC_CLASSES, recording.fileid
        )
    write_rttm(hypothesis, tmp_path / "test.rttm")
    scores = detection_scores(
        reference, read_rttm_files(tmp_path / "test.rttm"), VTC_CLASSES, uem=uem
    )
    present = [s for s in scores if s.reference_s > 0]
    assert len(present) >= 3
    assert min(s.f1 for s in present) > 0.85, scores
    assert macro_f1(present) > 0.85
