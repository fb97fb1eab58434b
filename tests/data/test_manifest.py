import io
import json
import tarfile

import pytest

from hubertlab.cli import main
from hubertlab.data.build import build_manifest
from hubertlab.data.manifest import ManifestError, ManifestRow, read_manifest, write_manifest
from hubertlab.data.scan import scan_folder, scan_tar, split_rows
from tests.conftest import write_tone


def test_scan_folder_nested_ids_and_rejects(audio_folder):
    result = scan_folder(audio_folder)
    ids = [r.fileid for r in result.rows]
    assert ids == ["spk1/a", "spk1/b", "spk2/a", "spk2/sub/c"]  # same names never collide
    counts = {r.fileid: r.num_samples for r in result.rows}
    assert counts["spk1/a"] == 16000 and counts["spk1/b"] == 8000
    assert counts["spk2/sub/c"] == 4000  # 8 kHz file: counted at 16 kHz
    rejected = {r.path: r.reason for r in result.rejected}
    assert set(rejected) == {"spk2/broken.wav", "spk3/empty.wav"}
    assert all(reason for reason in rejected.values())


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl"])
def test_build_and_read_back_every_format(audio_folder, tmp_path, ext):
    out = tmp_path / "manifests" / f"all{ext}"
    result = build_manifest(audio_folder, out)
    assert result.num_rows == 4 and result.num_rejected == 2
    manifest = read_manifest(out)
    assert [r.fileid for r in manifest] == ["spk1/a", "spk1/b", "spk2/a", "spk2/sub/c"]
    for i, row in enumerate(manifest):
        assert manifest.read_audio(i).shape == (row.num_samples,)
    report = result.report.read_text().splitlines()
    assert report[0] == "path\treason" and len(report) == 3


def test_tar_manifest_reads_members_in_place(tmp_path):
    src = tmp_path / "src"
    write_tone(src / "x" / "a.wav", 0.4)
    write_tone(src / "y" / "a.wav", 0.2)
    (src / "bad.wav").write_bytes(b"RIFFjunkjunkjunk")
    archive = tmp_path / "data" / "shard0.tar"
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as tar:
        for name in ["x/a.wav", "y/a.wav", "bad.wav"]:
            tar.add(src / name, arcname=name)
    result = scan_tar(archive)
    assert [r.fileid for r in result.rows] == ["x/a", "y/a"]
    assert [r.path for r in result.rejected] == ["shard0.tar:bad.wav"]
    out = tmp_path / "m" / "train.csv"
    build_manifest(archive, out)
    manifest = read_manifest(out)
    assert manifest[0].archive == "../data/shard0.tar"
    assert manifest.read_audio(0).shape == (6400,)
    with pytest.raises(ManifestError, match="tar members"):
        build_manifest(archive, tmp_path / "m" / "train.tsv")


def test_split_is_seeded_and_grouped_by_speaker(tmp_path):
    rows = [
        ManifestRow(f"spk{s}/utt{u}", f"spk{s}/utt{u}.wav", 16000)
        for s in range(10)
        for u in range(5)
    ]
    train, valid = split_rows(rows, valid_fraction=0.2, seed=3, speaker_level=0)
    again = split_rows(rows, valid_fraction=0.2, seed=3, speaker_level=0)
    assert (train, valid) == again
    speakers = lambda rs: {r.fileid.split("/")[0] for r in rs}  # noqa: E731
    assert len(speakers(valid)) == 2 and not speakers(train) & speakers(valid)
    assert len(train) + len(valid) == 50
    other = split_rows(rows, valid_fraction=0.2, seed=4, speaker_level=0)
    assert other != (train, valid)
    with pytest.raises(ValueError, match="level 2"):
        split_rows(rows, valid_fraction=0.2, seed=0, speaker_level=2)
    with pytest.raises(ValueError, match="valid_fraction"):
        split_rows(rows, valid_fraction=1.5, seed=0)


def test_cli_writes_split_and_report(audio_folder, tmp_path, capsys):
    out = tmp_path / "m.csv"
    code = main(
        [
            "manifest",
            str(audio_folder),
            str(out),
            "--valid-fraction",
            "0.5",
            "--speaker-level",
            "0",
            "--seed",
            "1",
        ]
    )
    assert code == 0
    train, valid = read_manifest(tmp_path / "m.train.csv"), read_manifest(tmp_path / "m.valid.csv")
    assert len(train) + len(valid) == 4
    assert "2 files rejected" in capsys.readouterr().out


def test_cli_missing_source_is_a_clear_error(tmp_path, capsys):
    assert main(["manifest", str(tmp_path / "nope"), str(tmp_path / "m.csv")]) == 1
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists()


def test_no_half_written_manifest_on_failure(tmp_path, monkeypatch):
    out = tmp_path / "m.csv"
    write_manifest([ManifestRow("a", "a.wav", 100)], out)
    rows = [ManifestRow("b", "b.wav", 100), object()]
    with pytest.raises(AttributeError):
        write_manifest(rows, out)  # type: ignore[list-item]
    assert [r.fileid for r in read_manifest(out)] == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]


@pytest.mark.parametrize(
    "content, match",
    [
        ("fileid,path\na,a.wav\n", "lacks column 'num_samples'"),
        ("fileid,path,num_samples\na,a.wav,ten\n", r"m.csv:2: column 'num_samples'"),
        ("fileid,path,num_samples\na,a.wav,10\na,b.wav,10\n", "appears in rows 1 and 2"),
        ("fileid,path,num_samples\na,,10\n", r"m.csv:2: missing value for column 'path'"),
        (
            "fileid,path,num_samples,archive,byte_offset,byte_size\na,a.wav,10,x.tar,,\n",
            "needs byte_offset",
        ),
    ],
)
def test_bad_csv_rows_are_named(tmp_path, content, match):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(ManifestError, match=match):
        read_manifest(tmp_path / "m.csv")


def test_bad_tsv_and_jsonl(tmp_path):
    (tmp_path / "m.tsv").write_text("/root\nonly-one-column\n")
    with pytest.raises(ManifestError, match=r"m.tsv:2"):
        read_manifest(tmp_path / "m.tsv")
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"fileid": "a", "path": "a", "num_samples": 3}) + "\n{broken\n"
    )
    with pytest.raises(ManifestError, match=r"m.jsonl:2: not valid JSON"):
        read_manifest(tmp_path / "m.jsonl")
    with pytest.raises(ManifestError, match="unknown format"):
        read_manifest_path = tmp_path / "m.txt"
        read_manifest_path.write_text("x")
        read_manifest(read_manifest_path)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_manifest(tmp_path / "missing.csv")


def test_fairseq_tsv_roundtrip(tmp_path):
    rows = [ManifestRow("a/x", "a/x.flac", 1234), ManifestRow("b/x", "b/x.flac", 99)]
    write_manifest(rows, tmp_path / "train.tsv", root="/data/libri")
    assert (tmp_path / "train.tsv").read_text() == "/data/libri\na/x.flac\t1234\nb/x.flac\t99\n"
    manifest = read_manifest(tmp_path / "train.tsv")
    assert list(manifest) == rows and str(manifest.root) == "/data/libri"


def _tar_of_tones(tmp_path, names):
    src = tmp_path / "src"
    for name in names:
        write_tone(src / name, 0.3)
    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tar:
        for name in names:
            tar.add(src / name, arcname=name)
    return archive


@pytest.mark.parametrize("where", ["data", "header"])
def test_truncated_tar_is_one_line_naming_it(tmp_path, capsys, where):
    archive = _tar_of_tones(tmp_path, ["a.wav", "b.wav", "c.wav"])
    with tarfile.open(archive) as tar:
        c = tar.getmember("c.wav")
    data = archive.read_bytes()
    # Cut inside c's samples (tarfile raises ReadError), or inside c's header (tarfile stops
    # quietly after b: only the bytes left after it tell).
    cut = c.offset_data + 100 if where == "data" else c.offset + 200
    archive.write_bytes(data[:cut])
    assert main(["manifest", str(archive), str(tmp_path / "m.csv")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    last = "c.wav" if where == "data" else "b.wav"
    assert f"{archive}: truncated or damaged tar after the header of '{last}'" in err
    assert not (tmp_path / "m.csv").exists()


def test_unsafe_tar_members_are_rejected_with_a_reason(tmp_path):
    archive = _tar_of_tones(tmp_path, ["x/a.wav"])
    tone = (tmp_path / "src" / "x" / "a.wav").read_bytes()  # readable audio, unsafe names
    with tarfile.open(archive, "a") as tar:
        for name, kind in [("../up.wav", tarfile.REGTYPE), ("/abs.wav", tarfile.REGTYPE),
                           ("soft.wav", tarfile.SYMTYPE), ("hard.wav", tarfile.LNKTYPE),
                           ("notes.txt", tarfile.SYMTYPE)]:  # fmt: skip
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "x/a.wav"
            if kind == tarfile.REGTYPE:
                info.size = len(tone)
            tar.addfile(info, io.BytesIO(tone) if kind == tarfile.REGTYPE else None)
    result = build_manifest(archive, tmp_path / "m.csv")
    assert [r.fileid for r in read_manifest(tmp_path / "m.csv")] == ["x/a"]
    report = result.report.read_text().splitlines()[1:]
    assert report == [
        "data.tar:../up.wav\tmember '../up.wav' has an absolute path or '..'",
        "data.tar:/abs.wav\tmember '/abs.wav' has an absolute path or '..'",
        "data.tar:soft.wav\tmember 'soft.wav' is a link",
        "data.tar:hard.wav\tmember 'hard.wav' is a link",
    ]
