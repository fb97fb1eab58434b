"""BabyHuBERT's segment policy, edge cases included."""

import numpy as np
import pytest

from hubertlab.curate.policy import SegmentPolicy, apply_policy, segment_rows
from hubertlab.data.manifest import ManifestRow


def _approx(segments):
    return [pytest.approx(s) for s in segments]


def test_merge_overlapping_and_close_segments_but_not_at_the_gap():
    segs = [(1.0, 3.0), (2.5, 4.0), (5.0, 7.0), (9.0, 11.0)]
    # 4.0 -> 5.0 is 1 s (merged); 7.0 -> 9.0 is exactly 2 s (not closer than 2 s: kept apart).
    assert apply_policy(segs, 20.0) == _approx([(1.0, 7.0), (9.0, 11.0)])


def test_short_segment_is_padded_symmetrically_and_kept():
    assert apply_policy([(5.0, 5.5)], 20.0) == _approx([(4.25, 6.25)])
    # Exactly the minimum after padding: kept (the public script drops it).
    assert apply_policy([(5.0, 7.0)], 20.0) == _approx([(5.0, 7.0)])


def test_padding_clamps_at_the_start_and_extends_the_end():
    assert apply_policy([(0.2, 0.6)], 20.0) == _approx([(0.0, 2.0)])


def test_padding_clamps_at_the_end_and_extends_the_start():
    assert apply_policy([(9.8, 10.0)], 10.0) == _approx([(8.0, 10.0)])


def test_segments_padded_into_each_other_merge_again():
    # 2.5 s apart before padding, 0.5 s after padding each by 0.75 s a side.
    assert apply_policy([(3.0, 3.5), (6.0, 6.5)], 20.0) == _approx([(2.25, 7.25)])


def test_file_shorter_than_the_minimum_gives_nothing():
    assert apply_policy([(0.2, 0.9)], 1.5) == []
    assert apply_policy([], 100.0) == []
    assert apply_policy([(1.0, 2.0)], 0.0) == []


def test_long_segment_splits_at_the_longest_merged_in_gap():
    segs = [(0.0, 10.0), (11.0, 25.0), (26.5, 40.0)]
    assert apply_policy(segs, 50.0) == _approx([(0.0, 25.0), (26.5, 40.0)])


def test_long_segment_without_gap_splits_at_the_middle_recursively():
    assert apply_policy([(0.0, 70.0)], 70.0) == _approx(
        [(0.0, 17.5), (17.5, 35.0), (35.0, 52.5), (52.5, 70.0)]
    )


def test_a_gap_that_would_leave_a_too_short_piece_is_not_used():
    # The only gap leaves 0.5 s on its left: splitting there would drop that speech.
    assert apply_policy([(0.0, 0.5), (1.5, 40.0)], 40.0) == _approx([(0.0, 20.0), (20.0, 40.0)])


def test_segments_past_the_file_are_clipped():
    assert apply_policy([(-1.0, 3.0), (8.0, 12.0)], 10.0) == _approx([(0.0, 3.0), (8.0, 10.0)])


def test_random_inputs_give_legal_outputs():
    rng = np.random.default_rng(0)
    policy = SegmentPolicy()
    for _ in range(200):
        duration = float(rng.uniform(0.5, 200))
        starts = np.sort(rng.uniform(0, duration, rng.integers(0, 30)))
        segs = [(float(s), float(s + rng.exponential(3))) for s in starts]
        out = apply_policy(segs, duration, policy)
        for (s, e), nxt in zip(out, out[1:] + [None], strict=False):
            assert 0 <= s < e <= duration + 1e-9
            assert policy.min_s - 1e-6 <= e - s <= policy.max_s + 1e-6
            if nxt is not None:
                assert e <= nxt[0]


def test_bad_policy_is_refused():
    with pytest.raises(ValueError, match="max_s"):
        SegmentPolicy(min_s=20, max_s=30)
    with pytest.raises(ValueError, match="merge_gap_s"):
        SegmentPolicy(merge_gap_s=-1)


def test_segment_rows_are_spans_named_by_samples():
    row = ManifestRow("a/rec", "a/rec.wav", 16000 * 10)
    rows = segment_rows(row, [(1.0, 3.5), (6.0, 10.0)])
    assert [(r.fileid, r.start, r.num_samples) for r in rows] == [
        ("a/rec_16000_56000", 16000, 40000),
        ("a/rec_96000_160000", 96000, 64000),
    ]
    span = ManifestRow("b", "b.wav", 16000 * 4, start=16000 * 100)
    assert segment_rows(span, [(1.0, 3.0)])[0].start == 16000 * 101


def test_speech_seconds_count_overlaps_once():
    from hubertlab.curate.speech import FileSpeech

    speech = FileSpeech("a", 10.0, ((0.0, 2.0), (1.0, 3.0), (1.5, 2.5), (5.0, 6.0)))
    assert speech.speech_s == pytest.approx(4.0)
