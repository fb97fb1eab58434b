"""phones.jsonl and ABX item files: round trips, frame labels, and errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubertlab.constants import num_frames
from hubertlab.data.alignments import (
    FRAME_HOP_S,
    FRAME_OFFSET_S,
    ITEM_HEADER,
    SIL,
    AbxItem,
    AlignmentError,
    PhoneRecord,
    abx_items,
    frame_phone_labels,
    read_item_file,
    read_phone_records,
    read_phone_segments,
    write_item_file,
    write_phone_records,
)

SEGMENTS = (
    (0.0, 0.03, SIL),
    (0.03, 0.07, "a"),
    (0.07, 0.1, "b"),
    (0.1, 0.15, "c"),
    (0.15, 0.2, SIL),
)


def _write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_phone_records_round_trip(tmp_path: Path):
    records = [
        PhoneRecord("s1/u1", "s1", "en", SEGMENTS),
        PhoneRecord("s2/u1", "s2", "fr", ((0.0, 0.5, SIL), (0.5, 0.6, "E~"), (0.6, 1.0, SIL))),
    ]
    write_phone_records(records, tmp_path / "phones.jsonl")
    assert read_phone_records(tmp_path / "phones.jsonl") == {r.fileid: r for r in records}
    segments = read_phone_segments(tmp_path / "phones.jsonl")
    assert list(segments) == ["s1/u1", "s2/u1"]
    assert segments["s1/u1"] == list(SEGMENTS)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ({"phones": [[0, 1, "a"]]}, "'fileid'"),
        ({"fileid": "x", "phones": []}, "non-empty list"),
        ({"fileid": "x", "phones": [[0, 1]]}, "segment 0 is not"),
        ({"fileid": "x", "phones": [[0, "1", "a"]]}, "segment 0 is not"),
        ({"fileid": "x", "phones": [[0.5, 0.5, "a"]]}, "onset < offset"),
        ({"fileid": "x", "phones": [[0, 1, "a"], [0.5, 2, "b"]]}, "before the previous ends"),
        ({"fileid": "x", "phones": [[0, 1, "a b"]]}, "whitespace"),
    ],
)
def test_malformed_phones_name_file_and_line(tmp_path: Path, line, message):
    good = {"fileid": "ok", "phones": [[0, 1, SIL]]}
    path = _write_lines(tmp_path / "phones.jsonl", [good, line])
    with pytest.raises(AlignmentError, match=message) as err:
        read_phone_segments(path)
    assert f"{path}:2:" in str(err.value)


def test_duplicate_and_missing(tmp_path: Path):
    good = {"fileid": "ok", "phones": [[0, 1, SIL]]}
    path = _write_lines(tmp_path / "phones.jsonl", [good, "", good])
    with pytest.raises(AlignmentError, match=r"phones.jsonl:3: fileid 'ok' appears twice"):
        read_phone_segments(path)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_phone_segments(tmp_path / "nope.jsonl")


def test_frame_labels_use_window_centres():
    assert (FRAME_HOP_S, FRAME_OFFSET_S) == (0.02, 0.0125)
    # 0.2 s = 3200 samples -> 9 CNN frames centred at 0.0125, 0.0325, ..., 0.1725 s.
    n = num_frames(3200)
    assert n == 9
    labels = frame_phone_labels(SEGMENTS, n)
    assert labels == [SIL, "a", "a", "b", "b", "c", "c", SIL, SIL]
    # 10 ms MFCC frames (25 ms window: centre 12.5 ms as well).
    mfcc = frame_phone_labels(SEGMENTS, 4, frame_hop_s=0.01)
    assert mfcc == [SIL, SIL, "a", "a"]
    # Past the end and in gaps: the fill label.
    assert frame_phone_labels(SEGMENTS, 12)[-2:] == [SIL, SIL]
    gap = ((0.0, 0.02, "a"), (0.05, 0.1, "b"))
    assert frame_phone_labels(gap, 4, fill="?") == ["a", "?", "b", "b"]
    assert frame_phone_labels(SEGMENTS, 0) == []
    with pytest.raises(ValueError, match="num_frames"):
        frame_phone_labels(SEGMENTS, -1)


def test_abx_items_follow_libri_light_rules():
    items = abx_items(SEGMENTS, "s1/u1", "s1")
    # "a" follows SIL and "c" precedes SIL: only "b" has two real neighbours.
    assert items == [AbxItem("s1/u1", 0.07, 0.1, "b", "a", "c", "s1")]
    no_sil = ((0.0, 0.1, "a"), (0.1, 0.2, "b"), (0.2, 0.3, "c"))
    assert [it.phone for it in abx_items(no_sil, "f", "s")] == ["b"]  # never first/last


def test_item_file_round_trip(tmp_path: Path):
    items = [
        AbxItem("s1/u1", 0.07, 0.1, "b", "a", "c", "s1"),
        AbxItem("s2/u9", 1.2345, 1.3, "E~", "**", "t", "s2"),
    ]
    write_item_file(items, tmp_path / "x.item")
    lines = (tmp_path / "x.item").read_text().splitlines()
    assert lines[0] == ITEM_HEADER
    assert lines[2] == "s2/u9 1.2345 1.3000 E~ ** t s2"
    assert read_item_file(tmp_path / "x.item") == items


@pytest.mark.parametrize(
    "text, message",
    [
        ("#file onset offset #phone speaker\n", ":1: expected header"),
        (ITEM_HEADER + "\nf 0.1 0.2 a b c\n", ":2: expected 7 columns"),
        (ITEM_HEADER + "\nf 0.1 x a b c s\n", ":2: onset/offset are not numbers"),
        (ITEM_HEADER + "\n\nf 0.3 0.2 a b c s\n", ":3: needs 0 <= onset < offset"),
        (ITEM_HEADER + "\nf 0.1 inf a b c s\n", ":2: needs 0 <= onset < offset"),
        (ITEM_HEADER + "\nf 0.1 nan a b c s\n", ":2: needs 0 <= onset < offset"),
        (
            ITEM_HEADER + "\nf 0.1 0.2 a b c s\ng 0.1 0.2 a b c s\nf 0.10 0.200 a b c s\n",
            r":4: token f 0.1 0.2 repeats line 2",
        ),
    ],
)
def test_malformed_item_file(tmp_path: Path, text, message):
    path = tmp_path / "bad.item"
    path.write_text(text)
    with pytest.raises(AlignmentError, match=message):
        read_item_file(path)
