"""A resumable, sharded JSONL writer: one line per input row, committed row by row.

Layout of an output folder (shard i of N, names as the feature store's, `shard_name`):
  meta.json              what was run (settings, num_shards): a rerun with others is refused
  <shard>.jsonl          one line per row done so far
  <shard>.progress.json  committed lines and bytes, replaced atomically after each commit
  <shard>.done           done marker: a finished shard is skipped on a rerun

A killed writer leaves at most one uncommitted line; on restart the file is cut back to the
committed size and writing continues after the last committed row. This is a minimal
stand-in for the shared resumable append-writer being extracted from features/store.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hubertlab.features.store import check_shard, shard_name
from hubertlab.fileio import atomic_write_json, atomic_write_text

META = "meta.json"


def check_meta(path: Path, meta: dict) -> None:
    """Write `meta` on first use; refuse a folder written with other settings."""
    if not path.is_file():
        atomic_write_json(path, meta)
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    if old != meta:
        diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
        raise ValueError(
            f"{path}: written with other settings ({', '.join(diff)}: "
            f"{[old.get(k) for k in diff]} vs {[meta.get(k) for k in diff]}); "
            "use another folder or delete it"
        )


class JsonlShardWriter:
    """Appends lines to shard `shard` of `num_shards` in `out_dir`; resumes a killed writer.

    `done` tells whether the shard was finished before; `lines` how many rows were committed
    (the caller skips that many of its rows); `keys` their keys, to check the input did not
    change."""

    def __init__(self, out_dir: str | Path, meta: dict, shard: int = 0, num_shards: int = 1):
        check_shard(shard, num_shards)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        check_meta(out / META, {**meta, "num_shards": num_shards})
        self.base = out / shard_name(shard, num_shards)
        self.path = self.base.with_suffix(".jsonl")
        self.progress_path = self.base.with_suffix(".progress.json")
        self.done = self.base.with_suffix(".done").is_file()
        self.lines, self.bytes = 0, 0
        if not self.done:
            self._resume()

    def _resume(self) -> None:
        if self.progress_path.is_file():
            progress = json.loads(self.progress_path.read_text(encoding="utf-8"))
            self.lines, self.bytes = int(progress["lines"]), int(progress["bytes"])
        if not self.path.exists():
            if self.bytes:
                raise ValueError(f"{self.path}: missing, but {self.progress_path} says data")
            self.path.touch()
        elif self.path.stat().st_size < self.bytes:
            raise ValueError(f"{self.path}: shorter than the committed {self.bytes} bytes")
        os.truncate(self.path, self.bytes)

    def committed(self) -> list[dict]:
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    def append(self, obj: dict) -> None:
        """Write one line, fsync, then record the progress atomically."""
        with open(self.path, "ab") as f:
            f.write((json.dumps(obj) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
            self.bytes = f.tell()
        self.lines += 1
        atomic_write_json(self.progress_path, {"lines": self.lines, "bytes": self.bytes})

    def finish(self) -> Path:
        if not self.done:
            atomic_write_text(self.base.with_suffix(".done"), "done\n")
            self.progress_path.unlink(missing_ok=True)
            self.done = True
        return self.path


def finished_shards(out_dir: str | Path, *, suffix: str) -> list[Path]:
    """The shard files of a finished folder, in order; the error names an unfinished one."""
    out = Path(out_dir)
    meta_path = out / META
    if not meta_path.is_file():
        raise FileNotFoundError(f"no {META} in {out}: not an output folder of ours")
    num_shards = json.loads(meta_path.read_text(encoding="utf-8"))["num_shards"]
    files = []
    for i in range(num_shards):
        base = out / shard_name(i, num_shards)
        if not base.with_suffix(".done").is_file():
            raise ValueError(f"{out}: shard {i} of {num_shards} is not finished ({base.name})")
        files.append(base.with_suffix(suffix))
    return files
