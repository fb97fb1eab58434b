"""Scanning never loses or merges files silently: symlinked folders are followed (once),
unlistable folders, fileid collisions and unwritable names all land in the report."""

from __future__ import annotations

import os
import shutil
import tarfile

import pytest

from hubertlab.data.build import build_manifest
from hubertlab.data.manifest import read_manifest
from hubertlab.data.scan import scan_folder, scan_tar
from tests.conftest import write_tone


def _reasons(result):
    return {r.path: r.reason for r in result.rejected}


def test_symlinked_folders_are_followed(tmp_path):
    write_tone(tmp_path / "elsewhere" / "spk9" / "x.wav", 0.2)
    root = tmp_path / "audio"
    write_tone(root / "spk1" / "a.wav", 0.2)
    os.symlink(tmp_path / "elsewhere" / "spk9", root / "spk9")
    result = scan_folder(root)
    assert [r.fileid for r in result.rows] == ["spk1/a", "spk9/x"]
    assert result.rejected == []


def test_symlink_loops_are_scanned_once_and_reported(tmp_path):
    root = tmp_path / "audio"
    write_tone(root / "spk1" / "a.wav", 0.2)
    os.symlink(root, root / "spk1" / "up")  # a link to a parent: would recurse forever
    os.symlink(root / "spk1", root / "zlink")  # a second way into spk1
    result = scan_folder(root)
    assert [r.fileid for r in result.rows] == ["spk1/a"]
    reasons = _reasons(result)
    assert set(reasons) == {"spk1/up/", "zlink/"}
    assert "already scanned as ./" in reasons["spk1/up/"]
    assert "already scanned as spk1/" in reasons["zlink/"]


def test_unlistable_folder_is_reported(tmp_path, monkeypatch):
    root = tmp_path / "audio"
    write_tone(root / "spk1" / "a.wav", 0.2)
    write_tone(root / "locked" / "b.wav", 0.2)
    real_scandir = os.scandir

    def scandir(path):  # chmod 000 does not stop root, so refuse the way the kernel would
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = scan_folder(root)
    assert [r.fileid for r in result.rows] == ["spk1/a"]
    assert _reasons(result) == {"locked/": "cannot list folder: Permission denied"}
    with pytest.raises(ValueError, match="locked: cannot list folder"):
        scan_folder(root / "locked")


def test_same_fileid_keeps_the_first_and_rejects_the_other(tmp_path):
    root = tmp_path / "audio"
    write_tone(root / "spk1" / "a.wav", 0.2)
    write_tone(root / "spk1" / "a.flac", 0.3)
    write_tone(root / "spk1" / "b.flac", 0.3)
    (root / "spk1" / "b.wav").write_bytes(b"RIFFbroken")  # unreadable: b.flac has no rival
    result = scan_folder(root)
    assert [(r.fileid, r.path) for r in result.rows] == [
        ("spk1/a", "spk1/a.flac"),
        ("spk1/b", "spk1/b.flac"),
    ]
    reasons = _reasons(result)
    assert reasons["spk1/a.wav"] == "same fileid 'spk1/a' as spk1/a.flac, which was kept"
    assert "same fileid" not in reasons["spk1/b.wav"]


@pytest.mark.parametrize("bad", ["tab\there.wav", "new\nline.wav", "cr\rhere.wav"])
@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl"])
def test_names_a_manifest_cannot_hold_are_refused(tmp_path, bad, ext):
    root = tmp_path / "audio"
    write_tone(root / "ok.wav", 0.2)
    write_tone(root / bad, 0.2)
    out = tmp_path / f"m{ext}"
    result = build_manifest(root, out)
    assert result.num_rows == 1 and result.num_rejected == 1
    assert [r.fileid for r in read_manifest(out)] == ["ok"]
    report = result.report.read_text(encoding="utf-8").splitlines()
    assert len(report) == 2  # the escaped name keeps the report one line per file
    escaped = bad.encode("unicode_escape").decode("ascii")
    assert report[1].startswith(escaped + "\t") and "control character" in report[1]


def test_undecodable_name_is_refused(tmp_path):
    root = tmp_path / "audio"
    write_tone(root / "ok.wav", 0.2)
    shutil.copyfile(os.fsencode(root / "ok.wav"), os.fsencode(root) + b"/caf\xe9.wav")
    result = build_manifest(root, tmp_path / "m.csv")
    assert result.num_rows == 1
    assert "not valid UTF-8" in result.report.read_text(encoding="utf-8")


def test_tar_collisions_and_bad_names_are_reported(tmp_path):
    src = tmp_path / "src"
    write_tone(src / "a.wav", 0.2)
    archive = tmp_path / "shard.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ["x/a.wav", "x/a.flac", "x/t\tb.wav"]:
            tar.add(src / "a.wav", arcname=name)
    result = scan_tar(archive)
    assert [r.path for r in result.rows] == ["x/a.wav"]
    reasons = _reasons(result)
    assert reasons["shard.tar:x/a.flac"] == "same fileid 'x/a' as shard.tar:x/a.wav, which was kept"
    assert "control character" in reasons["shard.tar:x/t\\tb.wav"]
