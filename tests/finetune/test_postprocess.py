"""Window averaging, threshold tuning, frames -> turns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hubertlab.constants import num_frames
from hubertlab.data.frame_targets import frame_targets
from hubertlab.data.rttm import VTC_CLASSES, Turn
from hubertlab.data.windows import sliding_window_starts
from hubertlab.finetune.postprocess import (
    average_windows,
    frames_to_turns,
    load_thresholds,
    save_thresholds,
    tune_thresholds,
)


def test_non_overlapping_windows_concatenate():
    rng = np.random.default_rng(0)
    windows = [rng.random((50, 4)).astype(np.float32) for _ in range(3)]
    track = average_windows(windows, [0, 50, 100], 150)
    np.testing.assert_array_equal(track, np.concatenate(windows))
    # a last window aligned to the end (frames 120..169) is averaged where it overlaps
    last = rng.random((50, 4)).astype(np.float32)
    track = average_windows([*windows, last], [0, 50, 100, 120], 170)
    np.testing.assert_allclose(track[100:120], windows[2][:20])
    np.testing.assert_allclose(track[120:150], (windows[2][20:] + last[:30]) / 2, rtol=1e-6)
    np.testing.assert_allclose(track[150:], last[30:])
    with pytest.raises(ValueError, match="frame 50 .* is covered by no window"):
        average_windows([windows[0]], [0], 60)


@pytest.mark.parametrize("num_samples", [50_000, 160_000 + 4321, 40 * 16000])
def test_overlapping_windows_place_frames_exactly(num_samples):
    """Windows cut from one track (4 s, 75 % overlap) average back to the same track."""
    frames = num_frames(num_samples)
    track = np.random.default_rng(1).random((frames, 4)).astype(np.float32)
    starts = [s // 320 for s in sliding_window_starts(num_samples)]
    windows = [track[k : k + 199] for k in starts]
    np.testing.assert_allclose(average_windows(windows, starts, frames), track, rtol=1e-6)


def test_tune_thresholds_finds_the_separating_value(tmp_path: Path):
    rng = np.random.default_rng(2)
    targets = (rng.random((2000, 2)) < 0.3).astype(np.float32)
    # class 0 separable at 0.7; class 1 at 0.25
    probs = np.where(targets > 0, rng.uniform(0.72, 1.0, targets.shape), 0.0)
    probs[:, 0] += np.where(targets[:, 0] > 0, 0, rng.uniform(0.0, 0.68, 2000))
    probs[:, 1] = np.where(
        targets[:, 1] > 0, rng.uniform(0.27, 1.0, 2000), rng.uniform(0, 0.23, 2000)
    )
    halves = [probs[:1000], probs[1000:]], [targets[:1000], targets[1000:]]
    tuned = tune_thresholds(*halves, ["A", "B"])
    assert tuned["A"] == {"threshold": 0.7, "f1": 1.0}
    assert tuned["B"] == {"threshold": 0.25, "f1": 1.0}
    # ignored frames do not count: corrupt their targets and mask them
    ignore = [np.zeros(1000, bool), np.zeros(1000, bool)]
    ignore[0][:100] = True
    bad = [t.copy() for t in halves[1]]
    bad[0][:100] = 1 - bad[0][:100]
    assert tune_thresholds(halves[0], bad, ["A", "B"], ignore=ignore)["A"]["f1"] == 1.0
    save_thresholds(tuned, tmp_path / "t.json")
    np.testing.assert_allclose(load_thresholds(tmp_path / "t.json", ["B", "A"]), [0.25, 0.7])
    with pytest.raises(ValueError, match="t.json: missing key 'C'"):
        load_thresholds(tmp_path / "t.json", ["C"])


def test_a_class_absent_from_dev_keeps_the_default_threshold(caplog):
    """No frame of B in dev: every threshold that predicts nothing scored 0 / 0 = "f1 1.0",
    so B was "tuned" to a confident 1.0 on nothing. It keeps 0.5, f1 undefined, a warning."""
    rng = np.random.default_rng(3)
    targets = np.zeros((500, 2), np.float32)
    targets[:200, 0] = 1
    probs = np.where(targets > 0, 0.9, rng.uniform(0, 0.6, targets.shape)).astype(np.float32)
    with caplog.at_level("WARNING"):
        tuned = tune_thresholds([probs], [targets], ["A", "B"])
    assert tuned["A"] == {"threshold": 0.6, "f1": 1.0}  # the separating value nearest 0.5
    assert tuned["B"] == {"threshold": 0.5, "f1": None}
    assert "class B has no frame in the dev set: its threshold stays at 0.5" in caplog.text


def test_vtc_frame_f1_leaves_absent_classes_out_of_the_macro_mean(caplog):
    from types import SimpleNamespace

    from hubertlab.tasks.vtc import VtcTask

    task = VtcTask(SimpleNamespace(finetune=SimpleNamespace(classes=("A", "B", "C"))))
    totals = {"tp_A": 5, "fp_A": 5, "fn_A": 0, "tp_B": 0, "fp_B": 0, "fn_B": 0,
              "tp_C": 0, "fp_C": 2, "fn_C": 0}  # fmt: skip
    with caplog.at_level("INFO"):
        summary = task.summarize(totals)
    # A: 10 / 15; C: predicted only, a defined 0; B: absent (was F1 1.0 lifting the mean)
    assert summary == pytest.approx({"f1_A": 2 / 3, "f1_C": 0.0, "f1_macro": 1 / 3})
    assert "B absent" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        task.summarize(totals)  # the next validation: the same absent class, not said again
    assert "absent" not in caplog.text
    nothing = dict.fromkeys(totals, 0)
    assert task.summarize(nothing) == {}  # no class to score: no f1_macro


def test_frames_to_turns_bridges_and_drops():
    active = np.zeros((300, 2), dtype=bool)
    active[10:40, 0] = True  # 0.2 s gap after: kept apart
    active[50:80, 0] = True
    active[83:120, 0] = True  # gap of 3 frames (~0.06 s): bridged with the previous
    active[200:203, 0] = True  # 3 frames (~0.05 s): dropped
    active[100:290, 1] = True
    turns = frames_to_turns(active, ["A", "B"], "f")
    spans = [(t.label, round(t.onset_s, 3), round(t.offset_s, 3)) for t in turns]
    assert spans == [
        ("A", 0.215, 0.79),
        ("A", 1.015, 2.39),
        ("B", 2.015, 5.79),
    ]


def test_targets_to_turns_round_trip_within_10_ms():
    rng = np.random.default_rng(3)
    turns, t = [], 0.0
    for i in range(20):
        t += rng.uniform(0.15, 1.0)
        duration = rng.uniform(0.15, 2.0)
        turns.append(Turn("f", round(t, 3), round(duration, 3), VTC_CLASSES[i % 4]))
        t += duration
    frames = num_frames(int(t * 16000) + 16000)
    active = frame_targets(turns, frames, VTC_CLASSES) > 0
    decoded = frames_to_turns(active, VTC_CLASSES, "f")
    assert len(decoded) == len(turns)
    for ref, hyp in zip(sorted(turns, key=lambda x: x.onset_s), decoded, strict=True):
        assert hyp.label == ref.label
        assert abs(hyp.onset_s - ref.onset_s) <= 0.0101
        assert abs(hyp.offset_s - ref.offset_s) <= 0.0101
