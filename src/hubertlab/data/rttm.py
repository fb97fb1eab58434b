"""RTTM and UEM files: who speaks when, and which regions of a recording are scored.

RTTM line: `SPEAKER <file> 1 <onset_s> <duration_s> <NA> <NA> <label> <NA> <NA>` (10 fields;
the channel and the <NA> fields are kept as written by others, never read).
UEM line: `<file> <channel> <start_s> <end_s>`. Lines starting with ";;" or "#" and blank lines
are skipped. Readers name the file and line of anything malformed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hubertlab.fileio import atomic_open

VTC_CLASSES = ("KCHI", "OCH", "MAL", "FEM")
RTTM_SUFFIXES = (".rttm",)


class RttmError(ValueError):
    """An RTTM or UEM file is malformed; the message names the file and line."""


@dataclass(frozen=True, order=True)
class Turn:
    """One labelled segment of a recording, in seconds."""

    fileid: str
    onset_s: float
    duration_s: float
    label: str

    @property
    def offset_s(self) -> float:
        return self.onset_s + self.duration_s


def _time(text: str, where: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RttmError(f"{where}: {name} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise RttmError(f"{where}: {name} {text!r} must be a finite number >= 0")
    return value


def _lines(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if fields and not fields[0].startswith((";;", "#")):
                yield f"{path}:{number}", fields


def read_rttm(path: str | Path, *, classes: Sequence[str] | None = None) -> list[Turn]:
    """Turns of an RTTM file, in file order. With `classes`, any other label is an error."""
    turns = []
    for where, fields in _lines(Path(path)):
        if len(fields) != 10:
            raise RttmError(f"{where}: expected 10 fields, got {len(fields)}")
        if fields[0] != "SPEAKER":
            raise RttmError(f"{where}: expected type SPEAKER, got {fields[0]!r}")
        onset_s = _time(fields[3], where, "onset")
        duration_s = _time(fields[4], where, "duration")
        label = fields[7]
        if classes is not None and label not in classes:
            raise RttmError(f"{where}: unknown class {label!r} (known: {', '.join(classes)})")
        turns.append(Turn(fields[1], onset_s, duration_s, label))
    return turns


def read_rttm_files(
    source: str | Path, *, classes: Sequence[str] | None = None
) -> dict[str, list[Turn]]:
    """Turns per fileid from one RTTM file or every *.rttm under a folder (sorted by onset)."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in RTTM_SUFFIXES)
        if not paths:
            raise FileNotFoundError(f"{source}: no .rttm files in this folder")
    else:
        paths = [source]
    by_file: dict[str, list[Turn]] = {}
    for path in paths:
        for turn in read_rttm(path, classes=classes):
            by_file.setdefault(turn.fileid, []).append(turn)
    return {fileid: sorted(turns) for fileid, turns in by_file.items()}


def _format_time(seconds: float) -> str:
    return f"{seconds:.3f}"


def write_rttm(turns: Iterable[Turn], path: str | Path) -> None:
    """Write turns as RTTM (milliseconds precision), atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for t in turns:
            if any(c.isspace() for c in t.fileid + t.label) or not t.fileid or not t.label:
                raise ValueError(f"{path}: fileid {t.fileid!r} / label {t.label!r}: need no spaces")
            f.write(
                f"SPEAKER {t.fileid} 1 {_format_time(t.onset_s)} {_format_time(t.duration_s)} "
                f"<NA> <NA> {t.label} <NA> <NA>\n"
            )


def read_uem(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Scored regions (start_s, end_s) per fileid, sorted."""
    regions: dict[str, list[tuple[float, float]]] = {}
    for where, fields in _lines(Path(path)):
        if len(fields) != 4:
            raise RttmError(f"{where}: expected 4 fields <file> <channel> <start> <end>")
        start_s = _time(fields[2], where, "start")
        end_s = _time(fields[3], where, "end")
        if end_s <= start_s:
            raise RttmError(f"{where}: end {end_s} must be after start {start_s}")
        regions.setdefault(fields[0], []).append((start_s, end_s))
    return {fileid: sorted(r) for fileid, r in regions.items()}


def write_uem(regions: dict[str, Sequence[tuple[float, float]]], path: str | Path) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        for fileid, spans in regions.items():
            for start_s, end_s in spans:
                f.write(f"{fileid} 1 {_format_time(start_s)} {_format_time(end_s)}\n")
