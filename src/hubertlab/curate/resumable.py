"""A resumable, sharded JSONL writer: one line per input row, committed row by row, on the
shared committed-append writer (hubertlab.shards).

Layout of an output folder (shard i of N, names from `hubertlab.shards.shard_name`):
  meta.json              what was run (settings, num_shards, the input's fingerprint): a rerun
                         with others is refused
  .<shard>.lock          held by the shard's writer (hubertlab.shards.shard_lock)
  <shard>.jsonl          one line per row done so far
  <shard>.progress.json  committed lines and bytes, replaced atomically after each commit
  <shard>.done           done marker: a finished shard is skipped on a rerun
"""

from __future__ import annotations

import json
from pathlib import Path

from hubertlab.shards import CommittedAppender, check_meta, check_shard, shard_name

META = "meta.json"


class JsonlShardWriter:
    """Appends JSON lines to shard `shard` of `num_shards` in `out_dir`; resumes a killed
    writer. `done` tells whether the shard was finished before; `lines` how many rows were
    committed (the caller skips that many of its rows)."""

    def __init__(self, out_dir: str | Path, meta: dict, shard: int = 0, num_shards: int = 1):
        check_shard(shard, num_shards)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        check_meta(out / META, {**meta, "num_shards": num_shards})
        self.appender = CommittedAppender(out / shard_name(shard, num_shards), {".jsonl": "bytes"})
        self.path = self.appender.path(".jsonl")

    @property
    def done(self) -> bool:
        return self.appender.done

    @property
    def lines(self) -> int:
        return self.appender.utterances

    def committed(self) -> list[dict]:
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    def append(self, obj: dict) -> None:
        """Write and commit one line (fsynced before the progress is recorded). NaN and
        infinities are refused (json.dumps would write `NaN`, which is not JSON)."""
        try:
            line = json.dumps(obj, allow_nan=False)
        except ValueError as e:
            row = f" ({obj['fileid']!r})" if isinstance(obj.get("fileid"), str) else ""
            raise ValueError(f"{self.path}: line {self.lines + 1}{row}: {e}: {obj}") from None
        self.appender.append({".jsonl": (line + "\n").encode()})
        self.appender.commit()

    def finish(self) -> Path:
        if not self.done:
            self.appender.mark_done()
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
