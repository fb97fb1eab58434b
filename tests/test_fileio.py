"""Atomic writes: permissions follow the umask, a full disk keeps the old file, stale temps go."""

from __future__ import annotations

import errno
import os
import stat
import time

import pytest

from hubertlab import fileio
from hubertlab.fileio import atomic_open, atomic_write_text, remove_stale_temps


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_file_honours_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    path = tmp_path / "m.csv"
    atomic_write_text(path, "x\n")
    assert stat.S_IMODE(path.stat().st_mode) == expected


def test_umask_is_read_without_being_changed(umask):
    umask(0o027)
    assert fileio.current_umask() == 0o027
    assert fileio.current_umask() == 0o027


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_at_fsync_names_the_path_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_write_text(path, "old")
    monkeypatch.setattr(fileio.os, "fsync", _disk_full)
    with pytest.raises(OSError, match="disk full while writing .*ckpt.pt") as info:
        atomic_write_text(path, "new")
    assert info.value.errno == errno.ENOSPC
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp left behind


def test_disk_full_while_writing_keeps_the_old_file(tmp_path):
    path = tmp_path / "units.jsonl"
    atomic_write_text(path, "old")
    with pytest.raises(OSError, match="disk full while writing .*units.jsonl"):
        with atomic_open(path, "w") as f:
            f.write("half")
            _disk_full()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["units.jsonl"]


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(KeyError):
        with atomic_open(tmp_path / "a.txt") as f:
            f.write("x")
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_temps_removes_only_old_temps_of_ours(tmp_path):
    old = time.time() - 2 * 3600
    stale = tmp_path / ".step_10.pt.ab12cd_9.tmp"
    fresh = tmp_path / ".step_20.pt.zz12cd34.tmp"
    not_ours = [tmp_path / "notes.tmp", tmp_path / ".x.short.tmp", tmp_path / "step_10.pt"]
    for p in [stale, fresh, *not_ours]:
        p.write_text("x")
    for p in [stale, *not_ours]:
        os.utime(p, (old, old))
    sub = tmp_path / "sub"
    sub.mkdir()
    nested = sub / ".a.pt.abcdefgh.tmp"
    nested.write_text("x")
    os.utime(nested, (old, old))

    assert remove_stale_temps(tmp_path) == [stale]
    assert not stale.exists()
    assert fresh.exists() and nested.exists() and all(p.exists() for p in not_ours)
    assert remove_stale_temps(tmp_path, older_than_s=0) == [fresh]
    assert remove_stale_temps(tmp_path / "missing") == []


def test_a_killed_write_leaves_a_temp_the_helper_recognises(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(tmp_path / "a.bin", "wb") as f:
            name = os.path.basename(f.name)
            raise KeyboardInterrupt
    assert fileio.TEMP_NAME.match(name)


def test_folder_lock_refuses_a_second_holder_at_once_and_goes_with_the_first(tmp_path):
    from hubertlab.fileio import FolderBusyError, folder_lock

    with folder_lock(tmp_path / "out", what="shard 0 of 1"):
        with pytest.raises(FolderBusyError, match=r"out: another run is writing shard 0 of 1"):
            with folder_lock(tmp_path / "out", what="shard 0 of 1"):
                pass
        with folder_lock(tmp_path / "out", ".other.lock"):  # another shard's lock is free
            pass
    with folder_lock(tmp_path / "out"):  # released with its holder
        pass


def test_remove_stale_temps_of_one_prefix(tmp_path):
    mine, theirs = tmp_path / ".a.progress.json.abcd1234.tmp", tmp_path / ".b.x.abcd1234.tmp"
    mine.write_text("x")
    theirs.write_text("x")
    assert remove_stale_temps(tmp_path, older_than_s=0, prefix=".a.") == [mine]
    assert theirs.exists()
