"""Reading WebDataset tar shards (hubertlab shard's, or anyone's) safely: members in order
from a path or a stream (a URL's), grouped into samples by key, decoded.

Reading refuses members named with `..` or an absolute path, links and devices (ValueError
naming the shard and member), and reports a truncated or damaged shard after yielding the
members before the damage. Writing is hubertlab.curate.shards; streaming training batches from
shards is hubertlab.data.stream.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import soundfile as sf

from hubertlab.constants import SAMPLE_RATE
from hubertlab.unit_ids import unit_ids

log = logging.getLogger(__name__)

SHARD_PATTERN = "shard-{:06d}.tar"  # the shard names of `hubertlab shard`


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
    shard): decode_sample says so. A member repeated within a sample is refused (one would
    silently replace the other); a key that comes back after other keys is a second sample,
    read with a warning naming the shard and key."""
    where = name or str(source)
    pending: dict[str, bytes | str] = {}
    seen: set[str] = set()
    for member, data in iter_members(source, report, name=name):
        key, _, ext = member.partition(".")
        if pending and pending["key"] != key:
            yield pending
            pending = {}
        if not pending:
            if key in seen:
                log.warning("%s: key %r appears twice (two samples with one key)", where, key)
            seen.add(key)
        elif ext in pending:
            raise ValueError(f"{where}: member {member!r} appears twice in sample {key!r}")
        pending["key"] = key
        pending[ext] = data
    if pending:
        yield pending


def read_shard(path: str | Path, report: list[TarReport] | None = None) -> Iterator[dict]:
    """Samples of one shard: {"key", "fileid", "num_samples", "audio" (float32), "units"?}."""
    for parts in iter_samples(path, report):
        sample = decode_sample(parts, path)
        if "units" in sample:
            sample["units"] = unit_ids(sample["units"], f"{path}: {sample['key']}.json")
        yield sample


def decode_sample(parts: dict, where: str | os.PathLike) -> dict:
    """{"key", "fileid", "num_samples", "audio" (float32), "units"?} of one raw sample;
    ValueError naming `where` and the key when a member is missing or does not decode. The
    units are left as read (the caller checks them with hubertlab.unit_ids.unit_ids: a bad
    unit id is an error, not a sample to skip)."""
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
    return {"key": key, **meta, "audio": wav}
