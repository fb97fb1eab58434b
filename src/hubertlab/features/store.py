"""Feature store: frame features of a manifest, written shard by shard, read memory-mapped.

Layout of a store folder (shard i of N, names `shard-{i:05d}-of-{N:05d}.*`):
  store.json            kind, dim, dtype, frame rate, num_shards, extractor settings, the
                        manifest's fingerprint (another manifest is refused)
  .<shard>.lock         held by the shard's writer: a second writer of the shard is refused
  <shard>.bin           raw float16/float32 frames, (frames, dim) row-major, appended in chunks
  <shard>.rows          one "fileid<TAB>frames" line per utterance written so far
  <shard>.progress.json committed utterances/frames/bytes, replaced atomically after each chunk
  <shard>.index.json    final index (fileids, offsets, lengths), written when the shard ends
  <shard>.done          done marker: a finished shard is skipped on a rerun

The shard files are appended by `hubertlab.shards.CommittedAppender` (as transcription's are):
a killed writer leaves at most one uncommitted chunk behind; on restart the .bin and .rows files
are cut back to the committed sizes and writing continues after the last committed utterance.
Many processes (array jobs) can write different shards of one store side by side.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from hubertlab.data.manifest import Manifest, ManifestRow, read_manifest
from hubertlab.features.extractors import FeatureExtractor, extract_checked, require_finite
from hubertlab.fileio import atomic_write_json
from hubertlab.fingerprint import manifest_input
from hubertlab.shards import (
    INPUT_KEY,
    CommittedAppender,
    check_committed_prefix,
    check_meta,
    check_shard,
    prefetch,
    shard_lock,
    shard_name,
    shard_rows,
)

__all__ = [
    "DTYPES", "STORE_META", "FeatureExtractor", "FeatureStore", "ShardWriter",
    "extract_features_to_store", "prefetch", "shard_name", "shard_rows", "write_store",
]  # fmt: skip

log = logging.getLogger(__name__)

STORE_META = "store.json"
DTYPES = ("float16", "float32")


class ShardWriter:
    """Appends (fileid, frames) to one shard in committed chunks; resumes a killed writer.

    `writer.done` tells whether the shard was finished before; `writer.utterances` how many
    utterances were committed (the caller skips that many of its rows)."""

    def __init__(
        self, out_dir: str | Path, meta: dict, shard: int = 0, num_shards: int = 1, *,
        chunk_bytes: int = 64 * 2**20, on_chunk: Callable[[int], None] | None = None,
    ) -> None:  # fmt: skip
        if meta["dtype"] not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {meta['dtype']!r}")
        check_shard(shard, num_shards)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        check_meta(out / STORE_META, {**meta, "num_shards": num_shards})
        self.base = out / shard_name(shard, num_shards)
        self.dim, self.dtype = int(meta["dim"]), np.dtype(meta["dtype"])
        self.chunk_bytes = chunk_bytes
        self.appender = CommittedAppender(
            self.base, {".bin": "bin_bytes", ".rows": "rows_bytes"}, ("frames",),
            on_commit=on_chunk,
        )  # fmt: skip

    @property
    def done(self) -> bool:
        return self.appender.done

    @property
    def utterances(self) -> int:
        return self.appender.utterances

    def add(self, fileid: str, frames: np.ndarray) -> None:
        if frames.ndim != 2 or frames.shape[1] != self.dim:
            raise ValueError(f"{fileid}: frames of shape {frames.shape}, expected (n, {self.dim})")
        with np.errstate(over="ignore"):  # overflow to float16 is caught just below
            stored = np.ascontiguousarray(frames, dtype=self.dtype)
        if not np.isfinite(stored).all():
            require_finite(frames, f"{self.base.parent}: {fileid}")
            raise ValueError(
                f"{self.base.parent}: {fileid}: features exceed the {self.dtype} range "
                f"(max |value| {np.abs(frames).max():.4g}); write the store as float32"
            )
        self.appender.append(
            {".bin": stored.tobytes(), ".rows": f"{fileid}\t{frames.shape[0]}\n".encode()},
            frames=frames.shape[0],
        )
        if self.appender.pending_bytes >= self.chunk_bytes:
            self.commit()

    def commit(self) -> None:
        """Append the pending frames, fsync, then atomically record the new progress."""
        try:
            self.appender.commit()
        except OSError as e:
            if e.filename is not None or str(self.base) in str(e):
                raise  # it names its file already
            # A plain write or fsync error names no file ("[Errno 28] No space left on
            # device"): say which shard, and that what was committed is kept.
            raise OSError(
                e.errno, f"{e.strerror or e} while writing {self.base}.bin and .rows (what was "
                "committed before is kept: free space and rerun to resume)",
            ) from e  # fmt: skip

    def committed_fileids(self) -> list[str]:
        with open(self.base.with_suffix(".rows"), encoding="utf-8") as f:
            return [line.split("\t", 1)[0] for line in f]

    def finish(self) -> Path:
        """Commit what is pending, write the index and the done marker; returns the index."""
        index_path = self.base.with_suffix(".index.json")
        if self.done:
            return index_path
        self.commit()
        progress = self.appender.progress
        fileids, lengths = [], []
        with open(self.base.with_suffix(".rows"), encoding="utf-8") as f:
            for line in f:
                fileid, n = line.rstrip("\n").split("\t")
                fileids.append(fileid)
                lengths.append(int(n))
        if len(fileids) != progress["utterances"] or sum(lengths) != progress["frames"]:
            raise ValueError(f"{self.base}.rows disagrees with its progress file; delete the shard")
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
        index = {
            "fileids": fileids, "offsets": offsets if lengths else [], "lengths": lengths,
            "frames": progress["frames"],
        }  # fmt: skip
        atomic_write_json(index_path, index)
        self.appender.mark_done()
        log.info(
            "%s: done, %d utterances, %d frames", self.base.name, len(fileids), index["frames"]
        )
        return index_path


def write_store(
    out_dir: str | Path,
    items: Iterable[tuple[str, np.ndarray]],
    *,
    dim: int,
    dtype: str = "float16",
    frame_rate_hz: int = 50,
    settings: dict | None = None,
) -> Path:
    """A one-shard store from (fileid, frames) pairs (features computed elsewhere)."""
    meta = {
        "dim": dim, "dtype": dtype, "frame_rate_hz": frame_rate_hz,
        "extractor": settings or {"kind": "array"},
    }  # fmt: skip
    with shard_lock(out_dir, 0, 1):
        writer = ShardWriter(out_dir, meta)
        if not writer.done:
            for i, (fileid, frames) in enumerate(items):
                if i >= writer.utterances:
                    writer.add(fileid, frames)
        return writer.finish()


def extract_features_to_store(
    manifest: Manifest | str | Path,
    out_dir: str | Path,
    extractor: FeatureExtractor,
    shard: int = 0,
    num_shards: int = 1,
    dtype: str = "float16",
    *,
    chunk_bytes: int = 64 * 2**20,
    on_chunk: Callable[[int], None] | None = None,
) -> Path:
    """Compute features for shard `shard` of `num_shards` of `manifest` into store `out_dir`.

    Resumes a killed run; skips a finished shard. Commits every ~`chunk_bytes` of features;
    `on_chunk(utterances_done)` is called after each commit. Returns the shard's index path."""
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    if not len(manifest):
        raise ValueError(f"{manifest.source or 'manifest'}: no rows (empty manifest)")
    rows = shard_rows(manifest, shard, num_shards)
    meta = {
        "dim": int(extractor.dim), "dtype": dtype, "frame_rate_hz": int(extractor.frame_rate_hz),
        "extractor": extractor.settings(), INPUT_KEY: manifest_input(manifest),
    }  # fmt: skip
    with shard_lock(out_dir, shard, num_shards):
        writer = ShardWriter(
            out_dir, meta, shard, num_shards, chunk_bytes=chunk_bytes, on_chunk=on_chunk
        )
        return _extract_shard(writer, rows, manifest, extractor)


def _extract_shard(
    writer: ShardWriter, rows: list[ManifestRow], manifest: Manifest, extractor: FeatureExtractor
) -> Path:
    if writer.done:
        log.info("%s: already done, skipped", writer.base.name)
        return writer.finish()
    check_committed_prefix(
        writer.appender, writer.committed_fileids(), [r.fileid for r in rows], manifest.source
    )
    todo = rows[writer.utterances :]
    log.info("%s: %d utterances to do (%d before)", writer.base.name, len(todo), writer.utterances)

    def load(row: ManifestRow) -> np.ndarray:
        return row.read_audio(manifest.root)

    for row, wav in zip(todo, prefetch(load, todo), strict=True):
        writer.add(row.fileid, extract_checked(extractor, row, wav, manifest.source))
    return writer.finish()


class FeatureStore:
    """All shards of a finished store, memory-mapped. `store[fileid]` -> (frames, dim) view."""

    def __init__(self, root: Path, meta: dict, shards: list[tuple[Path, dict]]) -> None:
        self.root = root
        self.meta = meta
        self.dim: int = meta["dim"]
        self.dtype = np.dtype(meta["dtype"])
        self.frame_rate_hz: int = meta["frame_rate_hz"]
        self._bins = [p for p, _ in shards]
        self._maps: list[np.ndarray | None] = [None] * len(shards)
        # fileid -> (shard, offset, length)
        self._where: dict[str, tuple[int, int, int]] = {}
        for s, (_, index) in enumerate(shards):
            for f, o, n in zip(index["fileids"], index["offsets"], index["lengths"], strict=True):
                if f in self._where:
                    raise ValueError(f"{root}: fileid {f!r} appears in two shards")
                self._where[f] = (s, o, n)
        self.shard_frames = [index["frames"] for _, index in shards]

    @classmethod
    def open(cls, root: str | Path) -> FeatureStore:
        """Open a store whose shards are all done; the error names any unfinished shard."""
        root = Path(root)
        meta_path = root / STORE_META
        if not meta_path.is_file():
            raise FileNotFoundError(f"not a feature store (no {STORE_META}): {root}")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        shards = []
        for i in range(meta["num_shards"]):
            base = root / shard_name(i, meta["num_shards"])
            if not base.with_suffix(".done").is_file():
                raise ValueError(
                    f"{root}: shard {i} of {meta['num_shards']} is not finished ({base.name}); "
                    f"run `hubertlab features ... --shard {i} --num-shards {meta['num_shards']}`"
                )
            index = json.loads(base.with_suffix(".index.json").read_text(encoding="utf-8"))
            shards.append((base.with_suffix(".bin"), index))
        return cls(root, meta, shards)

    def _map(self, shard: int) -> np.ndarray:
        if self._maps[shard] is None:
            frames = self.shard_frames[shard]
            self._maps[shard] = (
                np.zeros((0, self.dim), self.dtype)
                if frames == 0
                else np.memmap(self._bins[shard], self.dtype, "r", shape=(frames, self.dim))
            )
        return self._maps[shard]

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, fileid: object) -> bool:
        return fileid in self._where

    @property
    def fileids(self) -> list[str]:
        return list(self._where)

    @property
    def num_frames(self) -> int:
        return sum(self.shard_frames)

    def length(self, fileid: str) -> int:
        return self._locate(fileid)[2]

    def _locate(self, fileid: str) -> tuple[int, int, int]:
        try:
            return self._where[fileid]
        except KeyError:
            raise KeyError(f"{self.root}: no features for fileid {fileid!r}") from None

    def __getitem__(self, fileid: str) -> np.ndarray:
        shard, offset, length = self._locate(fileid)
        return self._map(shard)[offset : offset + length]

    def read_frames(self, fileid: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames [start, stop) of one utterance as a fresh in-memory array, read with a plain
        file read: unlike memmap views, this leaves no pages of the file mapped in the
        process (so its resident memory stays bounded while streaming a large store)."""
        shard, offset, length = self._locate(fileid)
        stop = length if stop is None else min(stop, length)
        count = max(stop - start, 0) * self.dim
        byte_offset = (offset + start) * self.dim * self.dtype.itemsize
        with open(self._bins[shard], "rb") as f:
            f.seek(byte_offset)
            data = np.fromfile(f, dtype=self.dtype, count=count)
        return data.reshape(-1, self.dim)

    def iter_chunks(
        self, fileids: Sequence[str] | None = None, max_frames: int = 65_536
    ) -> Iterator[np.ndarray]:
        """Frames of `fileids` (default: all, in store order) in chunks of at most
        `max_frames` rows, in the store dtype; utterances may straddle chunks."""
        fileids = self.fileids if fileids is None else fileids
        buf: list[np.ndarray] = []
        held = 0
        for fileid in fileids:
            length = self.length(fileid)
            start = 0
            while start < length:
                take = min(length - start, max_frames - held)
                buf.append(self.read_frames(fileid, start, start + take))
                held += take
                start += take
                if held == max_frames:
                    yield np.concatenate(buf) if len(buf) > 1 else buf[0]
                    buf, held = [], 0
        if held:
            yield np.concatenate(buf) if len(buf) > 1 else buf[0]
