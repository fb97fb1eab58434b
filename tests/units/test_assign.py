"""Transcription: one unit per 20 ms frame per utterance, sharded, resumable, fairseq files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hubertlab.cli import main
from hubertlab.constants import num_frames
from hubertlab.data.manifest import ManifestRow, read_manifest, write_manifest
from hubertlab.features.extractors import build_extractor
from hubertlab.features.mfcc import MfccExtractor
from hubertlab.features.store import FeatureStore, extract_features_to_store
from hubertlab.units.assign import (
    join_units,
    label_stride,
    read_units,
    transcribe,
    units_for_row,
)
from hubertlab.units.kmeans import KMeansModel, fit_kmeans
from tests.units_fixtures import demo_corpus


class Crash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(manifest path, MFCC store, k=20 quantizer)."""
    corpus = demo_corpus(tmp_path_factory)
    work = tmp_path_factory.mktemp("transcribe")
    # float32, so that units from the store equal units computed on the fly bit for bit
    store = work / "store"
    extract_features_to_store(corpus / "manifest.csv", store, MfccExtractor(), dtype="float32")
    kmeans = fit_kmeans(store, 20, fraction=0.5, seed=0)
    kmeans.save(work / "km")
    return corpus / "manifest.csv", work / "store", work / "km"


def test_units_files(setup, tmp_path):
    manifest_path, store, km = setup
    out = transcribe(manifest_path, km, store, tmp_path)
    assert out == tmp_path / "units.jsonl"
    manifest = read_manifest(manifest_path)
    units = read_units(tmp_path)
    assert list(units) == [r.fileid for r in manifest]
    for row in manifest:
        assert len(units[row.fileid]) == num_frames(row.num_samples)
        assert units[row.fileid].min() >= 0 and units[row.fileid].max() < 20
    km_lines = (tmp_path / "units.km").read_text().splitlines()
    assert len(km_lines) == len(manifest)
    assert km_lines[0] == " ".join(map(str, units[manifest[0].fileid]))
    assert (tmp_path / "dict.km.txt").read_text().splitlines() == [f"{i} 1" for i in range(20)]
    from_km = read_units(tmp_path / "units.km", manifest)
    assert all(np.array_equal(from_km[f], units[f]) for f in units)


def test_store_and_on_the_fly_agree_and_every_second_mfcc_frame(setup, tmp_path):
    manifest_path, store, km = setup
    transcribe(manifest_path, km, store, tmp_path / "a")
    transcribe(manifest_path, km, MfccExtractor(), tmp_path / "b")
    assert (tmp_path / "a" / "units.km").read_bytes() == (tmp_path / "b" / "units.km").read_bytes()
    model, features = KMeansModel.load(km), FeatureStore.open(store)
    fileid = features.fileids[0]
    np.testing.assert_array_equal(
        read_units(tmp_path / "a")[fileid], model.predict(np.asarray(features[fileid]))[::2]
    )


def test_shards_and_resume_give_the_same_result(setup, tmp_path):
    manifest_path, store, km = setup
    transcribe(manifest_path, km, store, tmp_path / "whole")
    calls = []

    def crash(done):
        calls.append(done)
        if len(calls) == 2:
            raise Crash

    with pytest.raises(Crash):
        transcribe(manifest_path, km, store, tmp_path / "parts", 1, 2, chunk_utterances=2,
                   on_chunk=crash)  # fmt: skip
    shard_file = tmp_path / "parts" / "shard-00001-of-00002.units.jsonl"
    with open(shard_file, "a") as f:
        f.write('{"fileid": "half-writ')  # a kill mid-write
    first = transcribe(manifest_path, km, store, tmp_path / "parts", 1, 2)
    assert first == shard_file  # shard 0 still pending: no merge yet
    assert not (tmp_path / "parts" / "units.jsonl").exists()
    transcribe(manifest_path, km, store, tmp_path / "parts", 0, 2)
    for name in ("units.jsonl", "units.km", "dict.km.txt"):
        assert (tmp_path / "parts" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_wrong_unit_count_names_the_file(setup, tmp_path):
    manifest_path, store, km = setup
    manifest = read_manifest(manifest_path)
    rows = list(manifest)
    bad = rows[3]
    rows[3] = ManifestRow(bad.fileid, str(manifest.root / bad.path), bad.num_samples + 640)
    write_manifest(rows[:5], tmp_path / "m.csv")
    with pytest.raises(ValueError, match=f"{bad.fileid}: .* units for {bad.num_samples + 640}"):
        transcribe(tmp_path / "m.csv", km, store, tmp_path / "out")
    model = KMeansModel.load(km)
    row = ManifestRow("spk/x", "x.wav", 16000)
    assert len(units_for_row(row, np.zeros((98, 39), np.float32), model, 2)) == 49
    with pytest.raises(ValueError, match="spk/x: 50 units for 16000 samples, expected"):
        units_for_row(row, np.zeros((100, 39), np.float32), model, 2)


def test_join_units_names_missing_fileids():
    rows = [ManifestRow("a/x", "a/x.wav", 800), ManifestRow("b/x", "b/x.wav", 800)]
    units = {"a/x": np.zeros(2, np.int32)}
    with pytest.raises(ValueError, match="no units for fileid 'b/x'"):
        join_units(rows, units)
    units["b/x"] = np.zeros(3, np.int32)
    with pytest.raises(ValueError, match="b/x: 3 units for 800 samples"):
        join_units(rows, units)


def test_bad_input(setup, tmp_path):
    manifest_path, store, km = setup
    assert label_stride(100) == 2 and label_stride(50) == 1
    with pytest.raises(ValueError, match="not a multiple"):
        label_stride(30)
    with pytest.raises(ValueError, match="shard must be in"):
        transcribe(manifest_path, km, store, tmp_path, 3, 3)
    with pytest.raises(FileNotFoundError, match="k-means"):
        transcribe(manifest_path, tmp_path / "nokm", store, tmp_path)
    wrong_dim = KMeansModel(np.zeros((4, 7), np.float32))
    with pytest.raises(ValueError, match="dim 7"):
        transcribe(manifest_path, wrong_dim, store, tmp_path)
    layer_km = KMeansModel(np.zeros((4, 39), np.float32), {"feature": {"kind": "layer"}})
    with pytest.raises(ValueError, match="fitted on kind='layer'"):
        transcribe(manifest_path, layer_km, store, tmp_path)
    with pytest.raises(FileNotFoundError, match="units file not found"):
        read_units(tmp_path / "none.jsonl")


def test_cli_end_to_end(setup, tmp_path, capsys):
    manifest_path, _, _ = setup
    corpus = Path(manifest_path).parent
    store, km, units = tmp_path / "store", tmp_path / "km", tmp_path / "units"
    for shard in ("0", "1"):
        args = ["features", str(manifest_path), str(store), "--kind", "mfcc", "--shard", shard]
        assert main([*args, "--num-shards", "2"]) == 0
    assert main(["kmeans", str(store), str(km), "--k", "16", "--fraction", "0.5"]) == 0
    assert main(["transcribe", str(manifest_path), str(km), str(units), "--store", str(store)]) == 0
    capsys.readouterr()
    assert main(["unit-quality", str(units), str(corpus / "phones.jsonl"), "--k", "16"]) == 0
    assert '"pnmi"' in capsys.readouterr().out
    assert main(["transcribe", str(manifest_path), str(km), str(units)]) == 1  # no source
    assert "give either --store or --kind" in capsys.readouterr().err
    assert main(["kmeans", str(store), str(km), "--k", "5000"]) == 1
    assert "exceeds" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("units", "message"),
    [
        ([0, -1, 2], "unit -1 at position 1 is negative"),
        ([0, 1.5], "unit 1.5 is not an integer id"),
        ([0, 1.0], "unit 1.0 is not an integer id"),
        (["5"], "unit '5' is not an integer id"),
        ([True], "unit True is not an integer id"),
        ([[1, 2]], r"unit \[1, 2\] is not an integer id"),
        ("12", "units must be a list of integers"),
        ([2**40], "unit 1099511627776 at position 0 does not fit int32"),
    ],
)
def test_read_units_refuses_ids_that_are_not_unit_ids_naming_file_and_line(
    tmp_path, units, message
):
    # np.asarray(..., int32) took all of these: -1 is the loss's ignore index (loss 0.0).
    path = tmp_path / "units.jsonl"
    path.write_text(
        '{"fileid": "a", "units": [0, 1]}\n' + json.dumps({"fileid": "b", "units": units}) + "\n"
    )
    with pytest.raises(ValueError, match=rf"units\.jsonl:2: b: {message}"):
        read_units(path)


def test_read_units_checks_km_lines_and_the_recorded_k(tmp_path):
    rows = [ManifestRow("a", "a.wav", 800), ManifestRow("b", "b.wav", 800)]
    km = tmp_path / "units.km"
    for line, message in (("0 -1", "unit -1 at position 1 is negative"),
                          ("0 1.5", "unit '1.5' is not an integer id")):  # fmt: skip
        km.write_text(f"0 1\n{line}\n")
        with pytest.raises(ValueError, match=rf"units\.km:2: {message}"):
            read_units(km, rows)
    km.write_text("0 1\n2 3\n")
    assert read_units(km, rows)["b"].tolist() == [2, 3]
    (tmp_path / "units.json").write_text('{"k": 3}')  # a transcribe folder records its k
    with pytest.raises(ValueError, match=r"units\.km:2: unit 3 at position 1 is not below k = 3"):
        read_units(km, rows)
    (tmp_path / "units.jsonl").write_text('{"fileid": "a", "units": [0, 5]}\n')
    with pytest.raises(ValueError, match=r"units\.jsonl:1: a: unit 5 .* not below k = 3"):
        read_units(tmp_path)


def test_kmeans_of_cmvn_features_refuses_raw_ones_and_back(setup, tmp_path):
    manifest_path, raw_store, raw_km = setup
    cmvn = build_extractor("mfcc", cmvn=True)
    extract_features_to_store(manifest_path, tmp_path / "store", cmvn, dtype="float32")
    fit_kmeans(tmp_path / "store", 20, fraction=0.5, seed=0).save(tmp_path / "km")
    with pytest.raises(ValueError, match="with per-utterance CMVN"):
        transcribe(manifest_path, tmp_path / "km", MfccExtractor(), tmp_path / "a")
    with pytest.raises(ValueError, match="with per-utterance CMVN"):
        transcribe(manifest_path, raw_km, cmvn, tmp_path / "b")
    transcribe(manifest_path, tmp_path / "km", tmp_path / "store", tmp_path / "c")
    transcribe(manifest_path, tmp_path / "km", cmvn, tmp_path / "d")
    assert (tmp_path / "c" / "units.km").read_bytes() == (tmp_path / "d" / "units.km").read_bytes()
