"""Manifests: one row per utterance (fileid, path, num_samples at 16 kHz), optionally pointing
into an uncompressed tar by byte offset. Read and written as CSV, fairseq TSV or JSONL.

A row may be a span of a recording: column `start` (samples at 16 kHz, an integer, so spans
are exact) says where it begins, and num_samples is then the span's length, not the file's.
Every stage reads only the span (by seeking), so long recordings are never cut into files.

fileid is the path relative to the scanned root without its extension, so `a/x.wav` and
`b/x.wav` never collide (a bug of public recipes, REFERENCE.md section 8)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from hubertlab.data.audio import AudioError, AudioInfo, audio_info, read_audio
from hubertlab.fileio import atomic_open, read_jsonl

CSV_COLUMNS = ("fileid", "path", "num_samples")
ARCHIVE_COLUMNS = ("archive", "byte_offset", "byte_size")
SPAN_COLUMNS = ("start",)


class ManifestError(ValueError):
    """A manifest file is malformed; the message names the file and row."""


@dataclass(frozen=True)
class ManifestRow:
    """One utterance. For a tar member, `path` is the member name inside `archive`. With
    `start`, the utterance is samples [start, start + num_samples) of the recording."""

    fileid: str
    path: str
    num_samples: int
    archive: str | None = None
    byte_offset: int | None = None
    byte_size: int | None = None
    start: int | None = None

    def audio_path(self, root: str | Path) -> Path:
        """The file to open: the archive for a tar member, else the audio file itself."""
        return Path(root) / (self.archive if self.archive is not None else self.path)

    def read_audio(self, root: str | Path, *, standardize: bool = False) -> np.ndarray:
        """The waveform (or span) at 16 kHz, float32, shape (num_samples,)."""
        try:
            return read_audio(
                self.audio_path(root),
                byte_offset=self.byte_offset,
                byte_size=self.byte_size,
                start=self.start,
                num_samples=None if self.start is None else self.num_samples,
                standardize=standardize,
            )
        except AudioError as e:
            if self.start is None:
                raise
            raise AudioError(f"row {self.fileid!r}: {e}") from None


def check_row_audio(row: ManifestRow, root: str | Path, where: str) -> AudioInfo:
    """The header of a row's audio (file or tar member), checked against the row without
    decoding: a whole file must hold exactly num_samples samples at 16 kHz (after resampling),
    a span must lie inside it. A row that claims more audio than the file holds would be
    padded or skipped; one that claims less leaves the rest out. Errors start with `where`
    (e.g. "m.csv: row 3 ('a')")."""
    info = audio_info(row.audio_path(root), byte_offset=row.byte_offset,
                      byte_size=row.byte_size)  # fmt: skip
    name = row.audio_path(root) if row.archive is None else f"{row.archive}:{row.path}"
    if row.start is None and info.num_samples != row.num_samples:
        raise ValueError(
            f"{where}: audio {name} has {info.num_samples} samples, the manifest says "
            f"{row.num_samples}; rebuild the manifest"
        )
    if row.start is not None and row.start + row.num_samples > info.num_samples:
        raise ValueError(
            f"{where}: span [{row.start}, {row.start + row.num_samples}) runs past the end of "
            f"{name} ({info.num_samples} samples); rebuild the manifest"
        )
    return info


def check_manifest_audio(manifest: Manifest) -> None:
    """check_row_audio for every row, each named "<manifest>: row <n> ('<fileid>')"."""
    for number, row in enumerate(manifest, 1):
        check_row_audio(row, manifest.root, f"{manifest.source}: row {number} ({row.fileid!r})")


class Manifest(Sequence[ManifestRow]):
    """Rows plus the folder their relative paths resolve against."""

    def __init__(self, rows: Iterable[ManifestRow], root: str | Path, source: str = "") -> None:
        self.rows = list(rows)
        self.root = Path(root)
        self.source = source
        seen: dict[str, int] = {}
        for i, row in enumerate(self.rows):
            if row.fileid in seen:
                raise ManifestError(
                    f"{source or 'manifest'}: fileid {row.fileid!r} appears in rows "
                    f"{seen[row.fileid] + 1} and {i + 1}"
                )
            seen[row.fileid] = i
        self._index = seen

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):  # type: ignore[override]
        return self.rows[i]

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(self.rows)

    def index(self, fileid: str) -> int:  # type: ignore[override]
        """Row number of `fileid`; KeyError naming it and the manifest if absent."""
        try:
            return self._index[fileid]
        except KeyError:
            raise KeyError(f"{self.source or 'manifest'}: no row with fileid {fileid!r}") from None

    def read_audio(self, i: int, *, standardize: bool = False) -> np.ndarray:
        return self.rows[i].read_audio(self.root, standardize=standardize)

    @property
    def total_samples(self) -> int:
        return sum(r.num_samples for r in self.rows)


def fileid_for(relpath: str) -> str:
    """Path relative to the root, '/'-separated, without the extension."""
    rel = relpath.replace(os.sep, "/")
    stem, _ = os.path.splitext(rel)
    return stem


def _int(value: str, where: str, column: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: column {column!r} is not an integer: {value!r}") from None
    if n < 0:
        raise ManifestError(f"{where}: column {column!r} is negative: {n}")
    return n


def _row_from_mapping(d: dict, where: str) -> ManifestRow:
    for column in CSV_COLUMNS:
        if d.get(column) in (None, ""):
            raise ManifestError(f"{where}: missing value for column {column!r}")
    archive = d.get("archive") or None
    offset = d.get("byte_offset")
    size = d.get("byte_size")
    if archive is not None and (offset in (None, "") or size in (None, "")):
        raise ManifestError(f"{where}: archive member needs byte_offset and byte_size")
    num_samples = _int(d["num_samples"], where, "num_samples")
    if num_samples == 0:
        raise ManifestError(f"{where}: num_samples is 0")
    start = d.get("start")
    return ManifestRow(
        fileid=str(d["fileid"]),
        path=str(d["path"]),
        num_samples=num_samples,
        archive=archive,
        byte_offset=None if archive is None else _int(offset, where, "byte_offset"),
        byte_size=None if archive is None else _int(size, where, "byte_size"),
        start=None if start in (None, "") else _int(start, where, "start"),
    )


def _read_csv(path: Path) -> list[ManifestRow]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise ManifestError(f"{path}: header lacks column {missing[0]!r} (has {header})")
        return [_row_from_mapping(d, f"{path}:{i + 2}") for i, d in enumerate(reader)]


def _read_jsonl(path: Path) -> list[ManifestRow]:
    rows = []
    for where, d in read_jsonl(path, error=ManifestError):
        rows.append(_row_from_mapping(d, where))
    return rows


def _read_tsv(path: Path) -> tuple[list[ManifestRow], Path]:
    """fairseq layout: first line the root folder, then `relpath<TAB>num_samples`."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines:
        raise ManifestError(f"{path}: empty file (expected the root folder on line 1)")
    root = Path(lines[0].strip())
    if not root.is_absolute():
        root = path.parent / root
    rows = []
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise ManifestError(f"{path}:{i}: expected 'relpath<TAB>num_samples', got {line!r}")
        num_samples = _int(parts[1], f"{path}:{i}", "num_samples")
        row = ManifestRow(fileid=fileid_for(parts[0]), path=parts[0], num_samples=num_samples)
        rows.append(row)
    return rows, root


def relocate(rows: Iterable[ManifestRow], root: str | Path, manifest_path: str | Path):
    """Rows whose paths resolve against `root`, rewritten to resolve against the folder of
    `manifest_path` (where a derived manifest is written). Absolute paths stay as they are."""
    rel = os.path.relpath(Path(root).resolve(), Path(manifest_path).resolve().parent)
    out = []
    for row in rows:
        name = row.archive if row.archive is not None else row.path
        if rel != "." and not os.path.isabs(name):
            name = f"{rel}/{name}".replace(os.sep, "/")
            row = replace(row, archive=name) if row.archive is not None else replace(row, path=name)
        out.append(row)
    return out


def manifest_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    formats = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}
    if suffix not in formats:
        raise ManifestError(f"{path}: unknown format {suffix!r} (use .csv, .tsv or .jsonl)")
    return formats[suffix]


def read_manifest(path: str | Path) -> Manifest:
    """Read a CSV, fairseq TSV or JSONL manifest (by extension). Relative paths resolve against
    the manifest's folder (CSV, JSONL) or the TSV's root line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    fmt = manifest_format(path)
    if fmt == "tsv":
        rows, root = _read_tsv(path)
    else:
        rows = _read_csv(path) if fmt == "csv" else _read_jsonl(path)
        root = path.parent
    return Manifest(rows, root, source=str(path))


def write_manifest(rows: Iterable[ManifestRow], path: str | Path, *, root: str | Path = "") -> None:
    """Write atomically in the format named by the extension. For TSV, `root` becomes line 1
    and tar members cannot be written (fairseq TSV has no columns for them)."""
    path = Path(path)
    fmt = manifest_format(path)
    rows = list(rows)
    has_archive = any(r.archive is not None for r in rows)
    has_span = any(r.start is not None for r in rows)
    if fmt == "tsv" and has_span:
        raise ManifestError(f"{path}: fairseq TSV cannot hold spans (start); use .csv")
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        if fmt == "tsv":
            if has_archive:
                raise ManifestError(f"{path}: fairseq TSV cannot hold tar members; use .csv")
            f.write(f"{root or '.'}\n")
            for r in rows:
                f.write(f"{r.path}\t{r.num_samples}\n")
        elif fmt == "jsonl":
            for r in rows:
                d = {k: v for k, v in asdict(r).items() if v is not None}
                f.write(json.dumps(d) + "\n")
        else:
            columns = CSV_COLUMNS + (ARCHIVE_COLUMNS if has_archive else ())
            columns += SPAN_COLUMNS if has_span else ()
            writer = csv.writer(f)
            writer.writerow(columns)
            for r in rows:
                d = asdict(r)
                writer.writerow(["" if d[c] is None else d[c] for c in columns])
