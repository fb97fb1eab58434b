"""WebDataset-compatible tar shards of audio (FLAC) and units, with a byte index.

Layout of OUT (shard i of N):
  shard-%06d.tar   uncompressed tar; per utterance, consecutive members <key>.flac and
                   <key>.json ({"fileid", "num_samples", "units"?}); keys have no dots or
                   slashes (WebDataset cuts the key at the first dot): "<row number>_<fileid
                   with every other character than [A-Za-z0-9_-] as '_'>", the fileid itself
                   is in the JSON
  index.csv        key, fileid, shard, num_samples, flac_offset, flac_size, json_offset,
                   json_size: byte offsets of each member's data, so one member is read in
                   place (manifest.csv holds the same as tar-member rows)
  manifest.csv     a tar-member manifest of the FLAC members (every stage reads it)
  shards.json      num_shards, units or not (written last: marks completion)

A shard is written to a temporary name and renamed when complete: a killed run redoes only the
unfinished shards. Reading refuses members named with `..` or an absolute path, links and
devices, and reports a truncated shard after yielding the members before the damage."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from hubertlab.constants import SAMPLE_RATE
from hubertlab.data.manifest import Manifest, ManifestRow, read_manifest, write_manifest
from hubertlab.fileio import atomic_open, atomic_write_json
from hubertlab.shards import check_meta, shard_rows

log = logging.getLogger(__name__)

SHARD_PATTERN = "shard-{:06d}.tar"
INDEX_COLUMNS = ("key", "fileid", "shard", "num_samples", "flac_offset", "flac_size",
                 "json_offset", "json_size")  # fmt: skip
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_key(index: int, fileid: str) -> str:
    """A WebDataset key for row `index`: no dots or slashes; unique through the row number."""
    return f"{index:09d}_{_UNSAFE.sub('_', fileid)[:120]}"


def _flac_bytes(wav: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> tuple[int, int]:
    """Append one member; returns (offset of its data, size)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # mtime 0: reproducible bytes
    tar.addfile(info, io.BytesIO(data))
    padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return tar.offset - padded, len(data)


def write_shard(
    rows: list[ManifestRow], first_index: int, root: Path, path: Path,
    units: dict[str, np.ndarray] | None,
) -> list[dict]:  # fmt: skip
    """One shard (atomically); returns its index entries."""
    entries = []
    with (
        atomic_open(path, "wb") as f,
        tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for i, row in enumerate(rows, start=first_index):
            key = safe_key(i, row.fileid)
            wav = row.read_audio(root)
            meta = {"fileid": row.fileid, "num_samples": int(len(wav))}
            if units is not None:
                meta["units"] = units[row.fileid].tolist()
            flac = _add(tar, f"{key}.flac", _flac_bytes(wav))
            js = _add(tar, f"{key}.json", json.dumps(meta).encode())
            entries.append({
                "key": key, "fileid": row.fileid, "shard": path.name,
                "num_samples": len(wav), "flac_offset": flac[0], "flac_size": flac[1],
                "json_offset": js[0], "json_size": js[1],
            })  # fmt: skip
    return entries


def write_shards(
    manifest: Manifest | str | Path, out_dir: str | Path, num_shards: int, *,
    units: dict[str, np.ndarray] | None = None,
) -> Path:  # fmt: skip
    """Pack `manifest` into `num_shards` tars in `out_dir`; returns index.csv. Finished shards
    (with their .index.json) are kept on a rerun with the same settings."""
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    if units is not None:
        from hubertlab.units.assign import join_units

        join_units(list(manifest), units)  # every row has units of the right length
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "num_shards": num_shards, "units": units is not None,
        "manifest": str(Path(manifest.source).resolve()),
    }  # fmt: skip
    check_meta(out / "settings.json", settings)
    entries: list[dict] = []
    start = 0
    for shard in range(num_shards):
        rows = shard_rows(manifest, shard, num_shards)
        path = out / SHARD_PATTERN.format(shard)
        part = path.with_suffix(".index.json")
        if path.is_file() and part.is_file():
            entries += json.loads(part.read_text(encoding="utf-8"))
        else:
            shard_entries = write_shard(rows, start, manifest.root, path, units)
            atomic_write_json(part, shard_entries)
            entries += shard_entries
            log.info("%s: %d utterances", path.name, len(rows))
        start += len(rows)
    index = out / "index.csv"
    with atomic_open(index, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=INDEX_COLUMNS)
        writer.writeheader()
        writer.writerows(entries)
    member_rows = [
        ManifestRow(
            e["fileid"],
            f"{e['key']}.flac",
            e["num_samples"],
            archive=e["shard"],
            byte_offset=e["flac_offset"],
            byte_size=e["flac_size"],
        )  # fmt: skip
        for e in entries
    ]
    write_manifest(member_rows, out / "manifest.csv")
    atomic_write_json(out / "shards.json", {**settings, "num_utterances": len(entries)})
    return index


@dataclass(frozen=True)
class TarReport:
    """What reading one tar found: members read, and the damage if it stopped early."""

    members: int = 0
    error: str | None = None


def check_member(member: tarfile.TarInfo, shard: str | os.PathLike) -> None:
    """Refuse what could escape a target folder or is not plain data."""
    name = member.name
    if name.startswith("/") or os.path.isabs(name) or ".." in Path(name).parts:
        raise ValueError(f"{shard}: member {name!r} has an absolute path or '..'")
    if member.issym() or member.islnk():
        raise ValueError(f"{shard}: member {name!r} is a link")
    if member.isdev() or member.isfifo():
        raise ValueError(f"{shard}: member {name!r} is a device or fifo")


def iter_members(
    source: str | Path | BinaryIO, report: list[TarReport] | None = None, *, name: str = ""
) -> Iterator[tuple[str, bytes]]:
    """(name, data) of the regular members of an uncompressed tar, in order: a path, or an open
    binary stream (a URL's, read front to back; `name` names it in messages). Unsafe members
    raise ValueError; a truncated or damaged tar ends the iteration after the last whole
    member, logged and put in `report`."""
    where = name or str(source)
    count, error = 0, None
    try:
        if isinstance(source, str | os.PathLike):
            tar = tarfile.open(source, mode="r:")
        else:
            tar = tarfile.open(fileobj=source, mode="r|")
        with tar:
            for member in tar:
                check_member(member, where)
                if not member.isfile():
                    continue
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    raise tarfile.ReadError(f"member {member.name!r} is cut short")
                count += 1
                yield member.name, data
    except (tarfile.ReadError, EOFError, OSError) as e:
        error = f"{where}: damaged after {count} members: {e}"
        log.warning("%s", error)
    if report is not None:
        report.append(TarReport(count, error))


def iter_samples(
    source: str | Path | BinaryIO, report: list[TarReport] | None = None, *, name: str = ""
) -> Iterator[dict[str, bytes | str]]:
    """The raw samples of one shard, in order: {"key", "<ext>": bytes, ...} for the consecutive
    members sharing a key (WebDataset's grouping). A sample may lack a member (a damaged
    shard): decode_sample says so."""
    pending: dict[str, bytes | str] = {}
    for member, data in iter_members(source, report, name=name):
        key, _, ext = member.partition(".")
        if pending and pending["key"] != key:
            yield pending
            pending = {}
        pending["key"] = key
        pending[ext] = data
    if pending:
        yield pending


def read_shard(path: str | Path, report: list[TarReport] | None = None) -> Iterator[dict]:
    """Samples of one shard: {"key", "fileid", "num_samples", "audio" (float32), "units"?}."""
    for parts in iter_samples(path, report):
        yield decode_sample(parts, path)


def decode_sample(parts: dict, where: str | os.PathLike) -> dict:
    """{"key", "fileid", "num_samples", "audio" (float32), "units"?} of one raw sample;
    ValueError naming `where` and the key when a member is missing or does not decode."""
    key = parts["key"]
    if "flac" not in parts or "json" not in parts:
        raise ValueError(f"{where}: sample {key!r} lacks its .flac or .json member")
    try:
        meta = json.loads(parts["json"])
        if not isinstance(meta, dict):
            raise ValueError(f"a JSON {type(meta).__name__}, not an object")
    except ValueError as e:
        raise ValueError(f"{where}: {key}.json does not decode: {e}") from None
    try:
        wav, rate = sf.read(io.BytesIO(parts["flac"]), dtype="float32")
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise ValueError(f"{where}: {key}.flac does not decode: {e}") from None
    if rate != SAMPLE_RATE or wav.ndim != 1:
        raise ValueError(f"{where}: {key}.flac is {rate} Hz with shape {wav.shape}, not mono "
                         f"{SAMPLE_RATE} Hz")  # fmt: skip
    sample = {"key": key, **meta, "audio": wav}
    if "units" in sample:
        sample["units"] = np.asarray(sample["units"], dtype=np.int32)
    return sample
