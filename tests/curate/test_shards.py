"""Tar shards: WebDataset reads them, the index reads members in place, reading is safe."""

import csv
import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf

from hubertlab.cli import main
from hubertlab.constants import num_frames
from hubertlab.curate.shards import safe_key, write_shards
from hubertlab.data.manifest import ManifestRow, read_manifest, write_manifest
from hubertlab.data.tar_shards import TarReport, iter_members, read_shard


@pytest.fixture
def corpus(tmp_path):
    """Five files with awkward fileids (folders, dots), plus a span row; and their units."""
    rng = np.random.default_rng(0)
    rows, units = [], {}
    for i, fid in enumerate(["a/x.1", "a/x_1", "b.c/d", "e", "f/g/h"]):
        n = 8000 + 1000 * i
        wav = (rng.standard_normal(n) * 0.1).astype(np.float32)
        sf.write(tmp_path / f"w{i}.wav", wav, 16000, subtype="PCM_16")
        rows.append(ManifestRow(fid, f"w{i}.wav", n))
    rows.append(ManifestRow("span", "w4.wav", 4000, start=2000))
    for row in rows:
        units[row.fileid] = np.arange(num_frames(row.num_samples)) % 7
    write_manifest(rows, tmp_path / "m.csv")
    with open(tmp_path / "units.jsonl", "w") as f:
        for fid, u in units.items():
            f.write(json.dumps({"fileid": fid, "units": u.tolist()}) + "\n")
    return tmp_path


def test_keys_have_no_dots_or_slashes():
    assert safe_key(3, "a/b.c d") == "000000003_a_b_c_d"


def test_shards_roundtrip_and_index_reads_in_place(corpus, tmp_path, capsys):
    out = tmp_path / "shards"
    args = ["shard", str(corpus / "m.csv"), str(out), "--num-shards", "2",
            "--units", str(corpus / "units.jsonl")]  # fmt: skip
    assert main(args) == 0
    source = read_manifest(corpus / "m.csv")
    samples = [s for i in range(2) for s in read_shard(out / f"shard-{i:06d}.tar")]
    assert [s["fileid"] for s in samples] == [r.fileid for r in source]
    for s, row in zip(samples, source, strict=True):
        np.testing.assert_allclose(s["audio"], source.read_audio(source.index(row.fileid)),
                                   atol=1 / 32768)  # fmt: skip
        assert s["num_samples"] == row.num_samples == len(s["audio"])
        assert len(s["units"]) == num_frames(row.num_samples)
    # The tar-member manifest reads each FLAC member by byte offset, like a scanned tar.
    members = read_manifest(out / "manifest.csv")
    assert members[5].fileid == "span" and members[5].archive == "shard-000001.tar"
    np.testing.assert_array_equal(members.read_audio(5), samples[5]["audio"])
    with open(out / "index.csv") as f:
        entry = list(csv.DictReader(f))[2]
    with open(out / entry["shard"], "rb") as f:
        f.seek(int(entry["json_offset"]))
        assert json.loads(f.read(int(entry["json_size"])))["fileid"] == "b.c/d"


def test_rerun_keeps_finished_shards(corpus, tmp_path):
    out = tmp_path / "s"
    write_shards(corpus / "m.csv", out, 2)
    before = (out / "shard-000000.tar").stat().st_mtime_ns
    (out / "shard-000001.tar").unlink()
    write_shards(corpus / "m.csv", out, 2)
    assert (out / "shard-000000.tar").stat().st_mtime_ns == before
    assert len(list(read_shard(out / "shard-000001.tar"))) == 3
    with pytest.raises(ValueError, match="other settings"):
        write_shards(corpus / "m.csv", out, 3)


def test_webdataset_reads_our_shards(corpus, tmp_path):
    import torch
    import webdataset as wds

    out = tmp_path / "s"
    write_shards(corpus / "m.csv", out, 2)
    urls = [str(out / f"shard-{i:06d}.tar") for i in range(2)]
    dataset = (
        wds.WebDataset(urls, nodesplitter=wds.split_by_node, shardshuffle=False)
        .decode()
        .to_tuple("__key__", "flac", "json")
    )
    keys, fileids = [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    for key, flac, meta in loader:
        keys.append(key)
        fileids.append(meta["fileid"])
        data, rate = sf.read(io.BytesIO(flac)) if isinstance(flac, bytes) else (flac, 16000)
        assert rate == 16000 and len(data) == meta["num_samples"]
    # Two workers take one shard each.
    assert sorted(fileids) == sorted(r.fileid for r in read_manifest(corpus / "m.csv"))
    assert all("." not in k for k in keys)


def _tar_with(path, member: tarfile.TarInfo, data: bytes = b""):
    with tarfile.open(path, "w") as tar:
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: tarfile.TarInfo("../evil.flac"), "'..'"),
        (lambda: tarfile.TarInfo("/abs.flac"), "absolute"),
        (lambda: _link("x.flac", tarfile.SYMTYPE), "link"),
        (lambda: _link("x.flac", tarfile.LNKTYPE), "link"),
        (lambda: _link("x.flac", tarfile.CHRTYPE), "device"),
    ],
)
def test_unsafe_members_are_refused(tmp_path, make, match):
    _tar_with(tmp_path / "bad.tar", make())
    with pytest.raises(ValueError, match=match):
        list(iter_members(tmp_path / "bad.tar"))


def _link(name, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, "/etc/passwd"
    return info


def test_truncated_shard_keeps_the_members_before_the_damage(corpus, tmp_path):
    out = tmp_path / "s"
    write_shards(corpus / "m.csv", out, 1)
    shard = out / "shard-000000.tar"
    with open(out / "index.csv") as f:
        cut = int(list(csv.DictReader(f))[3]["flac_offset"]) + 100  # inside sample 3's audio
    data = shard.read_bytes()[:cut]
    shard.write_bytes(data)
    report: list[TarReport] = []
    samples = list(read_shard(shard, report))
    assert [s["fileid"] for s in samples] == ["a/x.1", "a/x_1", "b.c/d"]
    assert report[0].members == 6 and "damaged after 6 members" in report[0].error
