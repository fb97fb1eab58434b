"""Scanning a folder or an uncompressed tar of audio into manifest rows, and splitting them.

Sample counts come from the headers, never by decoding. A file that cannot be read is put in
the report with its reason and left out: a scan never dies half-way."""

from __future__ import annotations

import collections
import io
import logging
import os
import tarfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from hubertlab.data.audio import (
    AUDIO_EXTENSIONS,
    AudioError,
    MemberWindow,
    audio_info,
    resampled_length,
)
from hubertlab.data.manifest import ManifestRow, fileid_for
from hubertlab.data.tar_shards import check_member

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejected:
    """A file left out of the manifest, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class ScanResult:
    rows: list[ManifestRow]
    rejected: list[Rejected]


def _is_audio(name: str, extensions: tuple[str, ...]) -> bool:
    return name.lower().endswith(extensions)


def _bad_name(relpath: str) -> str | None:
    """Why a name cannot go into a manifest, or None. Tabs and newlines break the TSV and CSV
    rows; undecodable bytes (surrogate escapes) cannot be written as UTF-8."""
    if any(ord(c) < 32 or ord(c) == 127 for c in relpath):
        return "name holds a tab, newline or other control character (manifests cannot hold it)"
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8 (manifests are UTF-8)"
    return None


def _printable(relpath: str) -> str:
    """`relpath` with control characters and undecodable bytes escaped, for the report."""
    return relpath.encode("unicode_escape").decode("ascii")


def _probe_file(root: Path, relpath: str) -> ManifestRow | Rejected:
    try:
        info = audio_info(root / relpath)
    except AudioError as e:
        return Rejected(relpath, str(e).split(": ", 1)[-1])
    return ManifestRow(fileid=fileid_for(relpath), path=relpath, num_samples=info.num_samples)


def _walk(root: Path, extensions: tuple[str, ...]) -> tuple[list[str], list[Rejected]]:
    """Relative paths of the audio files below `root`, following symlinked folders. A folder
    reached twice (a link to a parent, or two links to one folder) is scanned once; the other
    way in, and every folder that cannot be listed, goes to the report."""
    relpaths: list[str] = []
    rejected: list[Rejected] = []
    st = root.stat()
    seen = {(st.st_dev, st.st_ino): "."}
    queue = collections.deque([""])  # breadth first: the shortest way into a folder wins
    while queue:
        rel_dir = queue.popleft()
        try:
            with os.scandir(root / rel_dir if rel_dir else root) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if not rel_dir:  # nothing to scan at all: an error, not an empty manifest
                raise ValueError(f"{root}: cannot list folder: {e.strerror or e}") from e
            rejected.append(Rejected(f"{rel_dir}/", f"cannot list folder: {e.strerror or e}"))
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                is_dir = entry.is_dir()  # follows symlinks
                st = entry.stat() if is_dir else None
            except OSError as e:
                rejected.append(Rejected(_printable(rel), f"cannot stat: {e.strerror or e}"))
                continue
            if st is None:
                if _is_audio(entry.name, extensions):
                    relpaths.append(rel)
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                reason = f"folder already scanned as {seen[key]}/ (symlink loop or duplicate)"
                rejected.append(Rejected(f"{_printable(rel)}/", reason))
                continue
            seen[key] = rel
            queue.append(rel)
    return sorted(relpaths), rejected


def scan_folder(
    root: str | Path, *, extensions: tuple[str, ...] = AUDIO_EXTENSIONS, workers: int = 4
) -> ScanResult:
    """Every audio file below `root` (recursively, through symlinked folders), sorted by
    relative path. Unlistable folders, bad names and fileid collisions go to `rejected`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    relpaths, rejected = _walk(root, extensions)
    bad_names = [Rejected(_printable(r), why) for r in relpaths if (why := _bad_name(r))]
    relpaths = [r for r in relpaths if _bad_name(r) is None]
    batches = [relpaths[i : i + 512] for i in range(0, len(relpaths), 512)]

    def probe(batch: list[str]) -> list[ManifestRow | Rejected]:
        return [_probe_file(root, rel) for rel in batch]

    # Threads overlap file-system latency (network file systems); batches keep the
    # per-file overhead of the pool negligible on a local disk.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = [r for batch in pool.map(probe, batches) for r in batch]
    return _collect([*rejected, *bad_names, *results])


def scan_tar(
    archive: str | Path, *, extensions: tuple[str, ...] = AUDIO_EXTENSIONS, archive_name: str = ""
) -> ScanResult:
    """Every audio member of an uncompressed tar, with its byte offset and size. `archive_name`
    is what the rows record as `archive` (default: the file name), relative to the manifest."""
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    name = archive_name or archive.name
    results: list[ManifestRow | Rejected] = []
    try:
        tar = tarfile.open(archive, mode="r:")  # "r:" refuses compressed archives
    except tarfile.TarError as e:
        raise ValueError(f"{archive}: not an uncompressed tar archive: {e}") from e
    with tar, open(archive, "rb") as raw:
        last = None  # the damage lies after this member's header
        try:
            for member in tar:
                last = member.name
                if member.isdir() or not _is_audio(member.name, extensions):
                    continue
                if why := _unsafe(member) or _bad_name(member.name):
                    results.append(Rejected(f"{name}:{_printable(member.name)}", why))
                    continue
                results.append(_probe_member(raw, member, name))
        except tarfile.TarError as e:
            raise _damaged(archive, last, str(e)) from None
        if not _zeros_after(raw, tar.offset):
            raise _damaged(archive, last, "a member header is cut off")
    return _collect(results)


def _unsafe(member: tarfile.TarInfo) -> str | None:
    """Why a member cannot be a manifest row: a `..` or absolute name (a fileid outside the
    archive), a link or a device; the rules of reading shards (data.tar_shards)."""
    try:
        check_member(member, "")
    except ValueError as e:
        return str(e).removeprefix(": ")
    return None


def _damaged(archive: Path, last: str | None, detail: str) -> ValueError:
    after = "at its first member" if last is None else f"after the header of {last!r}"
    return ValueError(f"{archive}: truncated or damaged tar {after} ({detail}); copy it again")


def _zeros_after(raw, offset: int, block: int = 1 << 20) -> bool:
    """Whether the archive holds only zeros (end-of-archive blocks) after `offset`, where
    tarfile stopped: anything else is a header that was cut off."""
    raw.seek(offset)
    while chunk := raw.read(block):
        if chunk.count(0) != len(chunk):
            return False
    return True


def _probe_member(raw, member: tarfile.TarInfo, archive_name: str) -> ManifestRow | Rejected:
    reader = io.BufferedReader(MemberWindow(raw, member.offset_data, member.size))
    try:
        info = sf.info(reader)
        if info.frames <= 0:
            raise AudioError("no audio samples")
    except (AudioError, sf.LibsndfileError, RuntimeError, OSError) as e:
        return Rejected(f"{archive_name}:{member.name}", f"cannot read audio header: {e}")
    return ManifestRow(
        fileid=fileid_for(member.name),
        path=member.name,
        num_samples=resampled_length(info.frames, info.samplerate),
        archive=archive_name,
        byte_offset=member.offset_data,
        byte_size=member.size,
    )


def _collect(results: Iterable[ManifestRow | Rejected]) -> ScanResult:
    """Split rows from rejects. Two readable files with one fileid (`a.wav` and `a.flac`, or a
    tar member twice) would be indistinguishable downstream: the first by path is kept, the
    others are rejected naming it."""
    rows, rejected = [], []
    kept: dict[str, ManifestRow] = {}
    for r in results:
        if isinstance(r, Rejected):
            rejected.append(r)
        elif r.fileid in kept:
            first = kept[r.fileid]
            where = f"{r.archive}:{r.path}" if r.archive else r.path
            first_where = f"{first.archive}:{first.path}" if first.archive else first.path
            reason = f"same fileid {r.fileid!r} as {first_where}, which was kept"
            rejected.append(Rejected(where, reason))
        else:
            kept[r.fileid] = r
            rows.append(r)
    for r in rejected:
        log.warning("skipped %s: %s", r.path, r.reason)
    return ScanResult(rows=rows, rejected=rejected)


def speaker_of(fileid: str, level: int) -> str:
    """The folder `level` levels below the root (0 = first folder) names the speaker."""
    parts = fileid.split("/")
    if len(parts) <= level + 1:
        raise ValueError(f"fileid {fileid!r} has no folder at level {level} to name a speaker")
    return parts[level]


def split_rows(
    rows: list[ManifestRow],
    *,
    valid_fraction: float,
    seed: int,
    speaker_level: int | None = None,
    group_of: Callable[[ManifestRow], str] | None = None,
) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """A seeded train/valid split. With `speaker_level`, whole speakers go to one side, so
    validation speakers are unseen in training; with `group_of`, whole groups of its naming
    (e.g. the spans of one recording). Order within each side follows `rows`."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    if speaker_level is not None:
        groups = [speaker_of(r.fileid, speaker_level) for r in rows]
    else:
        groups = [group_of(r) if group_of else r.fileid for r in rows]
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise ValueError(f"cannot split {len(unique)} group(s) into train and valid")
    order = np.random.default_rng(seed).permutation(len(unique))
    num_valid = min(len(unique) - 1, max(1, round(valid_fraction * len(unique))))
    valid_groups = {unique[i] for i in order[:num_valid]}
    train = [r for r, g in zip(rows, groups, strict=True) if g not in valid_groups]
    valid = [r for r, g in zip(rows, groups, strict=True) if g in valid_groups]
    return train, valid
