"""Fingerprints of inputs: what a finished output was made from, written down beside it, so
that it is only reused while it still describes the same work (pipeline steps, and the
folders of `vad`, `shard` and `features`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import astuple
from pathlib import Path
from typing import Any

# Files up to this size are hashed; bigger ones (model weights) are known by size and mtime.
HASH_LIMIT_BYTES = 64 * 2**20


def file_fingerprint(path: str | Path | None) -> str | None:
    """sha256 of a file's bytes (size and mtime for a big one; every file of a folder)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        return digest({p.name: file_fingerprint(p) for p in sorted(path.iterdir()) if p.is_file()})
    if not path.is_file():
        return "missing"
    stat = path.stat()
    if stat.st_size > HASH_LIMIT_BYTES:
        return f"size={stat.st_size},mtime_ns={stat.st_mtime_ns}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def digest(obj: Any) -> str:
    """A short stable hash of a JSON-able value."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings_fingerprint(settings: dict) -> str:
    """sha256 of a JSON-able settings dict (key order does not matter): what a feature store
    and a k-means record of the extractor they were made with."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def rows_fingerprint(rows: Iterable) -> str:
    """A short hash of a manifest's rows (fileid, path, length, archive, span), in order: the
    same rows give the same hash whatever the file's format or folder."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(astuple(row), default=str).encode() + b"\n")
    return h.hexdigest()[:16]


def arrays_fingerprint(arrays: Iterable[Any]) -> str:
    """A short hash of a sequence of numpy arrays (dtype, shape and values), in order."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode() + a.tobytes())
    return h.hexdigest()[:16]


def manifest_input(manifest: Any) -> dict[str, str]:
    """{"manifest": its path, "fingerprint": its rows' hash}: what an output folder records of
    the manifest it was made from (hubertlab.shards.check_meta compares it on a rerun)."""
    return {"manifest": str(manifest.source), "fingerprint": rows_fingerprint(manifest)}
