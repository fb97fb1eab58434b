"""RTTM and UEM files: round trip, and errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubertlab.data.rttm import (
    VTC_CLASSES,
    RttmError,
    Turn,
    read_rttm,
    read_rttm_files,
    read_uem,
    write_rttm,
    write_uem,
)

TURNS = [
    Turn("rec/a", 0.0, 1.25, "KCHI"),
    Turn("rec/a", 0.5, 2.0, "FEM"),
    Turn("rec/b", 3.125, 0.02, "MAL"),
    Turn("rec/b", 10.0, 4.5, "OCH"),
]


def test_round_trip(tmp_path: Path):
    write_rttm(TURNS, tmp_path / "x.rttm")
    assert read_rttm(tmp_path / "x.rttm", classes=VTC_CLASSES) == TURNS
    line = (tmp_path / "x.rttm").read_text().splitlines()[0]
    assert line == "SPEAKER rec/a 1 0.000 1.250 <NA> <NA> KCHI <NA> <NA>"
    by_file = read_rttm_files(tmp_path)  # a folder of .rttm files
    assert by_file == {"rec/a": TURNS[:2], "rec/b": TURNS[2:]}


def test_uem_round_trip(tmp_path: Path):
    regions = {"rec/a": [(0.0, 60.0), (75.5, 120.0)], "rec/b": [(1.0, 2.0)]}
    write_uem(regions, tmp_path / "all.uem")
    assert read_uem(tmp_path / "all.uem") == regions


@pytest.mark.parametrize(
    "line, message",
    [
        ("SPEAKER a 1 0.0 1.0 <NA> <NA> KCHI <NA>", "expected 10 fields"),
        ("SPEAKER a 1 zero 1.0 <NA> <NA> KCHI <NA> <NA>", "onset 'zero' is not a number"),
        ("SPEAKER a 1 0.0 -1.0 <NA> <NA> KCHI <NA> <NA>", "duration '-1.0' must be"),
        ("SPEAKER a 1 nan 1.0 <NA> <NA> KCHI <NA> <NA>", "onset 'nan' must be"),
        ("SPEAKER a 1 0.0 1.0 <NA> <NA> DOG <NA> <NA>", "unknown class 'DOG'"),
        ("LEXEME a 1 0.0 1.0 <NA> <NA> KCHI <NA> <NA>", "expected type SPEAKER"),
    ],
)
def test_corrupt_line_named(tmp_path: Path, line: str, message: str):
    path = tmp_path / "bad.rttm"
    path.write_text(";; comment\nSPEAKER a 1 0.0 1.0 <NA> <NA> FEM <NA> <NA>\n" + line + "\n")
    with pytest.raises(RttmError, match=rf"bad.rttm:3: {message}"):
        read_rttm(path, classes=VTC_CLASSES)


def test_corrupt_uem_named(tmp_path: Path):
    path = tmp_path / "bad.uem"
    path.write_text("a 1 0 10\na 1 5 2\n")
    with pytest.raises(RttmError, match=r"bad.uem:2: end 2.0 must be after start 5.0"):
        read_uem(path)
    path.write_text("a 1 0\n")
    with pytest.raises(RttmError, match=r"bad.uem:1: expected 4 fields"):
        read_uem(path)
    with pytest.raises(FileNotFoundError, match="missing.rttm"):
        read_rttm(tmp_path / "missing.rttm")
