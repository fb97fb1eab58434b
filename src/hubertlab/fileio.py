"""Atomic writes: a reader never sees a half-written file, a killed writer leaves the old one.
Folder locks: one writer at a time for the outputs of a resumable command."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

# mkstemp(prefix=".<name>.", suffix=".tmp") names: 8 random characters from this alphabet.
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
STALE_TEMP_SECONDS = 3600.0
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no read-only query elsewhere: set, then restore at once
    os.umask(mask)
    return mask


def give_umask_permissions(path: str | os.PathLike) -> None:
    """chmod `path` to what a plain `open` would have given it (0666 less the umask): for
    files that libraries write with mkstemp's 0600 (safetensors, transformers' save_pretrained)."""
    os.chmod(path, 0o666 & ~current_umask())


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds.

    The file gets the permissions a plain `open` would give (0666 less the umask), not
    mkstemp's 0600, so teammates can read manifests and checkpoints. A full disk raises
    OSError(ENOSPC) naming `path`, and the previous `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            raise OSError(
                e.errno, f"disk full while writing {path} (the previous version, if any, is kept)"
            ) from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


class FolderBusyError(OSError):
    """Another process holds the lock of an output folder (or of one shard of it)."""


@contextlib.contextmanager
def folder_lock(
    folder: str | os.PathLike, name: str = ".lock", *, what: str = "this folder"
) -> Iterator[Path]:
    """Hold an exclusive lock (flock on `folder/name`, created if missing) for the block.

    It never waits: when another process holds it, FolderBusyError names the folder at once
    (a second writer of the same outputs is a mistake, not a queue: two `vad` runs wrote every
    recording twice). The lock goes with the process, so a killed writer leaves none behind;
    the empty lock file stays. flock may not lock across hosts on some network filesystems."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusyError(
                f"{folder}: another run is writing {what} (it holds {path.name}); wait for it to "
                "end, or write to another folder"
            ) from None
        yield path
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temps(
    folder: str | os.PathLike, *, older_than_s: float = STALE_TEMP_SECONDS, prefix: str = ""
) -> list[Path]:
    """Delete the temp files that killed atomic writes left in `folder` (not its subfolders).

    Only regular files named like atomic_open's temps (`.<name>.<8 chars>.tmp`, starting with
    `prefix`) and not modified for `older_than_s` seconds are removed: a writer still running
    keeps touching its temp, and the age test (not a pid) also holds on a filesystem shared
    across hosts. A writer holding the folder's lock (folder_lock) knows that no other writes
    there and passes older_than_s=0. Returns the removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    removed = []
    for entry in os.scandir(folder):
        if not entry.name.startswith(prefix) or not TEMP_NAME.match(entry.name):
            continue
        if not entry.is_file(follow_symlinks=False):
            continue
        with contextlib.suppress(FileNotFoundError):  # another process removed it first
            if now - entry.stat(follow_symlinks=False).st_mtime < older_than_s:
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
            log.info("removed stale temp file %s", entry.path)
    return sorted(removed)


def read_jsonl(
    path: str | os.PathLike, *, error: type[ValueError] = ValueError
) -> Iterator[tuple[str, dict]]:
    """("file:line", object) for every non-blank line of a JSONL file; a line that is not a
    JSON object raises `error` naming the file and line."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{where}: not valid JSON: {e}") from None
            if not isinstance(obj, dict):
                raise error(f"{where}: expected a JSON object")
            yield where, obj


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 100) -> None:
    """Save a matplotlib figure atomically (a reader never sees half a PNG) and close it."""
    import matplotlib.pyplot as plt  # lazy: slow to import; only figures need it

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
