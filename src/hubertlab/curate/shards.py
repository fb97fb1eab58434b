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
  shards.json      num_shards, units or not, the input's fingerprint (written last: marks
                   completion)
  settings.json    the settings and the fingerprint of the manifest (and units): a rerun with
                   other settings or another input is refused
  .lock            held by the writer: a second `hubertlab shard` into the folder is refused

A shard is written to a temporary name and renamed when complete: a killed run redoes only the
unfinished shards (its temp files are removed). Reading them (safely) is
hubertlab.data.tar_shards."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf

from hubertlab.constants import SAMPLE_RATE
from hubertlab.data.manifest import Manifest, ManifestRow, read_manifest, write_manifest
from hubertlab.data.tar_shards import SHARD_PATTERN
from hubertlab.fileio import atomic_open, atomic_write_json, folder_lock, remove_stale_temps
from hubertlab.fingerprint import arrays_fingerprint, manifest_input
from hubertlab.shards import INPUT_KEY, check_meta, shard_rows

log = logging.getLogger(__name__)

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
    made_from = manifest_input(manifest)
    if units is not None:
        # lazy: units.assign imports torch (seconds); shards of audio alone do without
        from hubertlab.units.assign import join_units

        # every row has units of the right length
        made_from["units"] = arrays_fingerprint(join_units(list(manifest), units))
    out = Path(out_dir)
    # One writer per folder: a second would write the same shards and index under it.
    with folder_lock(out, what="shards"):
        remove_stale_temps(out, older_than_s=0)  # of a killed run: nobody else writes here
        return _write_shards(manifest, out, num_shards, units, made_from)


def _write_shards(
    manifest: Manifest, out: Path, num_shards: int, units: dict[str, np.ndarray] | None,
    made_from: dict,
) -> Path:  # fmt: skip
    settings = {
        "num_shards": num_shards, "units": units is not None,
        "manifest": str(Path(manifest.source).resolve()),
    }  # fmt: skip
    check_meta(out / "settings.json", {**settings, INPUT_KEY: made_from})
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
    shards_json = {**settings, INPUT_KEY: made_from, "num_utterances": len(entries)}
    atomic_write_json(out / "shards.json", shards_json)
    return index
