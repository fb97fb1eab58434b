"""Bad input to the resumable writers `vad`, `shard` and `features` (and the unit readers):
unit ids that are not ids, a rerun after the manifest changed, a second writer in the same
folder, temp files of a killed run. Exit code 1 and one line naming the file, key or folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hubertlab.cli import main
from hubertlab.constants import num_frames
from hubertlab.data.audio import write_audio
from hubertlab.data.manifest import ManifestRow, write_manifest
from hubertlab.fileio import folder_lock

NUM_FILES = 12
# (command line after MANIFEST OUT, the folder's settings file, the lock of shard 0 of 1)
WRITERS = {
    "vad": (["--backend", "energy"], "meta.json", ".shard-00000-of-00001.lock"),
    "shard": (["--num-shards", "2"], "settings.json", ".lock"),
    "features": (["--kind", "mfcc"], "store.json", ".shard-00000-of-00001.lock"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """wav/ with 12 short files, rows.json (their manifest rows) and units.jsonl."""
    root = tmp_path_factory.mktemp("bad_input_shards")
    rng = np.random.default_rng(0)
    rows, lines = [], []
    for i in range(NUM_FILES):
        wav = (0.1 * rng.standard_normal(8000 + 320 * i)).astype(np.float32)
        wav[: len(wav) // 2] *= 0.01  # a quiet half: the energy VAD finds speech and silence
        write_audio(root / "wav" / f"s{i}.wav", wav)
        rows.append(ManifestRow(f"s{i}", f"wav/s{i}.wav", len(wav)))
        units = (np.arange(num_frames(len(wav))) % 5).tolist()
        lines.append(json.dumps({"fileid": f"s{i}", "units": units}))
    (root / "units.jsonl").write_text("\n".join(lines) + "\n")
    write_manifest(rows, root / "all.csv")
    return root


def manifest(corpus: Path, tmp_path: Path, count: int) -> Path:
    """tmp_path/m.csv with the first `count` rows of the corpus (paths relative to it)."""
    rows = (corpus / "all.csv").read_text().splitlines()
    text = "\n".join(rows[: count + 1]).replace("wav/", f"{corpus}/wav/") + "\n"
    (tmp_path / "m.csv").write_text(text)
    return tmp_path / "m.csv"


def fails(capsys, argv: list, *needles: str) -> str:
    """Run the CLI; it must exit 1 with one error line holding every needle."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"hubertlab {argv[0]}: error:") and err.count("\n") == 1, err
    for needle in needles:
        assert str(needle) in err, (needle, err)
    return err


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("bad", ["-1", "1.5", '"5"'])
def test_unit_ids_that_are_not_ids_are_refused_naming_file_and_line(corpus, tmp_path, capsys, bad):
    # Before: all three were taken (-1 trained at masked loss 0.0, 1.5 became 1, "5" became 5).
    m = manifest(corpus, tmp_path, 3)
    units = tmp_path / "units.jsonl"
    lines = (corpus / "units.jsonl").read_text().splitlines()[:3]
    lines[1] = lines[1].replace('"units": [0, ', f'"units": [{bad}, ')
    units.write_text("\n".join(lines) + "\n")
    where = f"{units}:2: s1: unit {json.loads(bad)!r}"
    fails(capsys, ["shard", m, tmp_path / "out", "--num-shards", "1", "--units", units], where)
    assert not (tmp_path / "out" / "shards.json").exists()
    # unit-quality: a numpy message naming no file before
    fails(capsys, ["unit-quality", units, tmp_path / "phones.jsonl"], where)


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_rerun_after_the_manifest_changed_is_refused_naming_both(
    corpus, tmp_path, capsys, command
):
    # Before: the rerun printed the new count (3) and kept the outputs of the 12 rows.
    flags, settings, _ = WRITERS[command]
    out = tmp_path / "out"
    m = manifest(corpus, tmp_path, NUM_FILES)
    assert main([command, str(m), str(out), *flags]) == 0
    first = json.loads((out / settings).read_text())["input"]
    assert first["manifest"] == str(m)
    before = outputs(out)
    manifest(corpus, tmp_path, 3)
    err = fails(capsys, [command, m, out, *flags], "manifest changed", first["fingerprint"])
    assert err.count(str(m)) == 2 and f"{out}: made from" in err  # old input and new
    assert outputs(out) == before
    assert main([command, str(manifest(corpus, tmp_path, NUM_FILES)), str(out), *flags]) == 0


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_folder_of_an_older_version_is_taken_and_gets_its_fingerprint(corpus, tmp_path, command):
    flags, settings, _ = WRITERS[command]
    out = tmp_path / "out"
    m = manifest(corpus, tmp_path, NUM_FILES)
    assert main([command, str(m), str(out), *flags]) == 0
    meta = json.loads((out / settings).read_text())
    recorded = meta.pop("input")
    (out / settings).write_text(json.dumps(meta))  # as an older hubertlab wrote it
    assert main([command, str(m), str(out), *flags]) == 0
    assert json.loads((out / settings).read_text())["input"] == recorded


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_second_writer_of_the_same_folder_is_refused(corpus, tmp_path, capsys, command):
    # Before: two `vad` runs into one folder both exited 0, every recording written twice.
    flags, _, lock = WRITERS[command]
    out = tmp_path / "out"
    m = manifest(corpus, tmp_path, NUM_FILES)
    with folder_lock(out, lock):  # the first run, still writing
        fails(capsys, [command, m, out, *flags], f"{out}: another run is writing")
    assert main([command, str(m), str(out), *flags]) == 0  # the lock goes with its holder


def test_vad_shards_of_one_folder_are_written_side_by_side(corpus, tmp_path):
    m, out = manifest(corpus, tmp_path, NUM_FILES), tmp_path / "out"
    with folder_lock(out, ".shard-00001-of-00002.lock"):  # shard 1 is being written
        assert main(["vad", str(m), str(out), "--backend", "energy", "--num-shards", "2"]) == 0
        assert (out / "shard-00000-of-00002.done").is_file()


def test_a_rerun_of_a_killed_shard_removes_its_temp_files(corpus, tmp_path):
    m, out = manifest(corpus, tmp_path, NUM_FILES), tmp_path / "out"
    assert main(["shard", str(m), str(out), "--num-shards", "2"]) == 0
    (out / "shard-000001.tar").unlink()  # killed while writing shard 1:
    (out / ".shard-000001.tar.k1ll3d00.tmp").write_bytes(b"half a tar")
    assert main(["shard", str(m), str(out), "--num-shards", "2"]) == 0
    assert not list(out.glob(".*.tmp"))
    assert (out / "shard-000001.tar").is_file()


def test_the_same_rows_under_another_name_are_the_same_input(corpus, tmp_path):
    m, out = manifest(corpus, tmp_path, NUM_FILES), tmp_path / "out"
    assert main(["features", str(m), str(out), "--kind", "mfcc"]) == 0
    moved = m.rename(tmp_path / "moved.csv")
    assert main(["features", str(moved), str(out), "--kind", "mfcc"]) == 0
