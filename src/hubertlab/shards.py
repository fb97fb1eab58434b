"""Resumable sharded writers, shared by the feature store, transcription and VAD.

A manifest is cut into N contiguous shards; shard i's files are `shard-{i:05d}-of-{N:05d}.*`
in one folder, so many processes (array jobs) can write different shards side by side. A
shard's files grow by appending committed chunks:
  <shard><suffix>         each data file, appended to
  <shard>.progress.json   committed utterances, counters and each file's size, replaced
                          atomically after the files are fsynced
  <shard>.done            done marker: a finished shard is skipped on a rerun
A killed writer leaves at most one uncommitted chunk behind; on restart every file is cut back
to its committed size and writing continues after the last committed utterance.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hubertlab.fileio import atomic_write_json, atomic_write_text, folder_lock, remove_stale_temps

log = logging.getLogger(__name__)

ITEMS_KEY = "utterances"
INPUT_KEY = "input"  # the input's fingerprint in a folder's settings file (check_meta)


def shard_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}"


def check_shard(shard: int, num_shards: int) -> None:
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not 0 <= shard < num_shards:
        raise ValueError(
            f"shard must be in [0, {num_shards - 1}] for {num_shards} shards, got {shard}"
        )


def check_meta(path: Path, meta: dict) -> None:
    """Write a folder's settings on first use; refuse a folder written with other settings
    (naming the keys that differ). `meta["input"]`, when given, is what the outputs are made
    from (hubertlab.fingerprint.manifest_input): another input is refused naming both; a
    folder of an older hubertlab, which recorded none, is taken and gets it recorded."""
    if not path.is_file():
        atomic_write_json(path, meta)
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); delete the folder") from None
    if not isinstance(old, dict):
        raise ValueError(f"{path}: not a JSON object; delete the folder")
    recorded, given = old.get(INPUT_KEY), meta.get(INPUT_KEY)
    old_settings = {k: v for k, v in old.items() if k != INPUT_KEY}
    settings = {k: v for k, v in meta.items() if k != INPUT_KEY}
    if old_settings != settings:
        diff = sorted(k for k in set(old_settings) | set(settings)
                      if old_settings.get(k) != settings.get(k))  # fmt: skip
        raise ValueError(
            f"{path}: written with other settings ({', '.join(diff)}: "
            f"{[old.get(k) for k in diff]} vs {[meta.get(k) for k in diff]}); "
            "use another folder or delete it"
        )
    if given is None or _content(recorded) == _content(given):
        return  # the same rows under another path are the same input
    if recorded is None:  # written before inputs were recorded: trusted, and recorded now
        log.info("%s: recording the input fingerprint %s", path, given.get("fingerprint"))
        atomic_write_json(path, {**old, INPUT_KEY: given})
        return
    units = " (or its units)" if "units" in given else ""
    raise ValueError(
        f"{path.parent}: made from {_describe(recorded)}, now given {_describe(given)}: the "
        f"manifest changed since{units}, and the outputs of the old one would be kept; use "
        "another folder or delete it"
    )


def _content(record: object) -> object:
    """An input record without the manifest's path (only what it holds counts)."""
    if not isinstance(record, dict):
        return record
    return {k: v for k, v in record.items() if k != "manifest"}


def _describe(record: object) -> str:
    if not isinstance(record, dict):
        return repr(record)
    rest = ", ".join(f"{k} {v}" for k, v in sorted(record.items()) if k != "manifest")
    return f"{record.get('manifest')} ({rest})"


@contextlib.contextmanager
def shard_lock(out_dir: str | Path, shard: int, num_shards: int) -> Iterator[None]:
    """Be the only writer of shard `shard` of `num_shards` in `out_dir` for the block (other
    shards may be written side by side); the shard's temp files left by a killed writer are
    removed once the lock is held. FolderBusyError names the folder and shard."""
    name = shard_name(shard, num_shards)
    with folder_lock(out_dir, f".{name}.lock", what=f"shard {shard} of {num_shards}"):
        remove_stale_temps(out_dir, older_than_s=0, prefix=f".{name}.")
        yield


def shard_rows(rows: Sequence, shard: int, num_shards: int) -> list:
    """Contiguous slice `shard` of `num_shards` of the rows (sizes differ by at most one)."""
    check_shard(shard, num_shards)
    n = len(rows)
    return list(rows[shard * n // num_shards : (shard + 1) * n // num_shards])


def prefetch(fn: Callable, items: Sequence, depth: int = 4) -> Iterator:
    """fn(item) for each item in order, computed up to `depth` items ahead in a thread, so
    audio decoding overlaps feature computation."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(fn, it) for it in items[:depth]]
        for i in range(len(items)):
            result = pending[i].result()
            pending[i] = None  # let the waveform go
            if i + depth < len(items):
                pending.append(pool.submit(fn, items[i + depth]))
            yield result


class CommittedAppender:
    """Appends to the files of one shard in committed chunks; resumes a killed writer.

    `files` maps each file's suffix to the progress key of its committed size (".bin" ->
    "bin_bytes"); `counters` are extra running totals kept in the progress file beside the
    number of utterances. `append` buffers one utterance, `commit` writes the buffer.
    `appender.done` tells whether the shard was finished before."""

    def __init__(
        self,
        base: str | Path,
        files: Mapping[str, str],
        counters: Sequence[str] = (),
        *,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self.base = Path(base)
        self.files = dict(files)
        self.counters = tuple(counters)
        self.on_commit = on_commit
        self.base.parent.mkdir(parents=True, exist_ok=True)
        self.done = self.path(".done").is_file()
        self.progress = self._empty() if self.done else self._resume()
        self._clear_pending()

    def path(self, suffix: str) -> Path:
        return self.base.with_suffix(suffix)

    @property
    def utterances(self) -> int:
        """Utterances committed so far (the caller skips that many of its rows)."""
        return self.progress[ITEMS_KEY]

    @property
    def pending_utterances(self) -> int:
        return self.pending_counts[ITEMS_KEY]

    def _empty(self) -> dict[str, int]:
        return dict.fromkeys((ITEMS_KEY, *self.counters, *self.files.values()), 0)

    def _clear_pending(self) -> None:
        self.pending: dict[str, list[bytes]] = {suffix: [] for suffix in self.files}
        self.pending_counts = dict.fromkeys((ITEMS_KEY, *self.counters), 0)
        self.pending_bytes = 0

    def _read_progress(self) -> dict[str, int]:
        path = self.path(".progress.json")
        progress = self._empty()
        if not path.is_file():
            return progress
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}); delete the shard") from None
        if (
            not isinstance(saved, dict)
            or set(saved) != set(progress)
            or not all(isinstance(v, int) and v >= 0 for v in saved.values())
        ):
            raise ValueError(
                f"{path}: expected counts {sorted(progress)}, got {saved!r}; delete the shard"
            )
        return saved

    def _resume(self) -> dict[str, int]:
        """Committed progress; the shard's files are cut back to what was committed."""
        progress = self._read_progress()
        for suffix, key in self.files.items():
            path, size = self.path(suffix), progress[key]
            if not path.exists():
                if size:
                    raise ValueError(
                        f"{path}: missing, but {self.path('.progress.json').name} says {size} "
                        "bytes; delete the shard"
                    )
                path.touch()
            elif path.stat().st_size < size:
                raise ValueError(
                    f"{path}: shorter than the committed {size} bytes; delete the shard"
                )
            os.truncate(path, size)
        return progress

    def append(self, data: Mapping[str, bytes], **counts: int) -> None:
        """Buffer one utterance: `data[suffix]` goes to that file; `counts` add to counters."""
        for suffix in self.files:
            chunk = data[suffix]
            self.pending[suffix].append(chunk)
            self.pending_bytes += len(chunk)
        self.pending_counts[ITEMS_KEY] += 1
        for key, n in counts.items():
            self.pending_counts[key] += n

    def commit(self) -> None:
        """Append the buffered bytes, fsync, then atomically record the new progress; calls
        `on_commit(utterances committed)`. Nothing happens when nothing is buffered."""
        if not self.pending_counts[ITEMS_KEY]:
            return
        for suffix, key in self.files.items():
            with open(self.path(suffix), "ab") as f:
                f.writelines(self.pending[suffix])
                f.flush()
                os.fsync(f.fileno())
                self.progress[key] = f.tell()
        for key, n in self.pending_counts.items():
            self.progress[key] += n
        atomic_write_json(self.path(".progress.json"), self.progress)
        self._clear_pending()
        if self.on_commit is not None:
            self.on_commit(self.utterances)

    def mark_done(self) -> None:
        """Commit what is buffered, then write the done marker (after the caller's own
        final files) and drop the progress file."""
        self.commit()
        atomic_write_text(self.path(".done"), "done\n")
        self.path(".progress.json").unlink(missing_ok=True)
        self.done = True


def check_committed_prefix(
    appender: CommittedAppender, committed: list[str], fileids: list[str], source: str
) -> None:
    """Refuse to resume when the committed utterances are not the first of this shard's
    rows (the manifest changed since the killed run)."""
    if appender.utterances > len(fileids) or len(committed) != appender.utterances:
        raise ValueError(
            f"{appender.base}: {len(committed)} utterances written and {appender.utterances} "
            f"committed, but this shard of {source} has {len(fileids)}; delete the shard and rerun"
        )
    if committed != fileids[: len(committed)]:
        raise ValueError(
            f"{appender.base}: the committed utterances are not the first rows of this shard of "
            f"{source}; the manifest changed since: delete the shard and rerun"
        )
