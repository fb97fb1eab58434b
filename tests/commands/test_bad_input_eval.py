"""Bad input to `abx`, `unit-quality`, `manifest` and `export`, through the CLI: exit status 1
and one line naming the file, row or key, never a score computed from the wrong thing.
Each refusal sits beside the same command on good input, which must still pass."""

from __future__ import annotations

import csv
import json
import os
import pickle
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hubertlab.cli import main
from hubertlab.config import to_dict
from hubertlab.constants import num_frames
from hubertlab.data.alignments import read_phone_segments
from hubertlab.data.manifest import read_manifest
from hubertlab.evaluate.abx_sweep import mfcc_features
from hubertlab.features.store import write_store
from tests.conftest import write_tone


def _fails(capsys, argv: list[str], *needles: str) -> str:
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _passes(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad") / "corpus"
    assert main(["demo-corpus", str(out), "--minutes", "0.5", "--seed", "3", "--workers", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def mfcc(corpus) -> dict[str, np.ndarray]:
    return mfcc_features(read_manifest(corpus / "manifest.csv"))


def _npy_folder(folder: Path, features: dict[str, np.ndarray]) -> Path:
    for fileid, frames in features.items():
        (folder / fileid).parent.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{fileid}.npy", frames)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny model saved as a training checkpoint (.pt): what export, features, abx read."""
    from hubertlab.models.config import HubertConfig
    from hubertlab.models.hubert import HubertModel

    torch.manual_seed(0)
    cfg = HubertConfig.preset(
        "tiny", conv_channels=(32,) * 7, hidden_dim=64, ffn_dim=128, num_layers=2,
        num_heads=2, final_dim=32, num_units=(10,),
    )  # fmt: skip
    path = tmp_path_factory.mktemp("bad") / "step_10.pt"
    torch.save({"model": HubertModel(cfg).state_dict(), "model_config": to_dict(cfg)}, path)
    return path


# --- abx ---------------------------------------------------------------------------------


def test_abx_npy_features_at_another_rate_than_the_frame_shift(corpus, mfcc, tmp_path, capsys):
    item, manifest = str(corpus / "abx.item"), str(corpus / "manifest.csv")
    npy = str(_npy_folder(tmp_path / "npy", mfcc))  # 100 Hz arrays
    argv = ["abx", item, "--features", npy, "--out", str(tmp_path / "o")]
    # The default 0.02 s against the audio lengths: names a file and both rates.
    err = _fails(capsys, [*argv, "--manifest", manifest], "50 frames/s", "manifest.csv")
    assert "frames/s" in err.split("i.e. ")[1] and "99." in err
    # Without the audio lengths nothing can check the default: the rate must be given.
    _fails(capsys, argv, "record no frame rate", "--frame-shift")
    _passes(capsys, [*argv, "--manifest", manifest, "--frame-shift", "0.01"])


def test_abx_frame_shift_contradicting_a_recorded_rate(corpus, mfcc, checkpoint, tmp_path, capsys):
    item, manifest = str(corpus / "abx.item"), str(corpus / "manifest.csv")
    store = tmp_path / "store"
    write_store(store, mfcc.items(), dim=39, frame_rate_hz=100)
    out = ["--out", str(tmp_path / "o")]
    argv = ["abx", item, "--features", str(store), *out]
    _fails(capsys, [*argv, "--frame-shift", "0.02"], "store.json frame_rate_hz", "100 frames/s")
    _passes(capsys, [*argv, "--manifest", manifest])  # the store's own rate, counts checked
    mfcc_argv = ["abx", item, "--manifest", manifest, "--mfcc", *out]
    _fails(capsys, [*mfcc_argv, "--frame-shift", "0.02"], "MFCC", "50 frames/s")
    model_argv = ["abx", item, "--manifest", manifest, "--checkpoint", str(checkpoint), *out]
    _fails(capsys, [*model_argv, "--frame-shift", "0.01"], str(checkpoint), "100 frames/s")


def test_abx_store_of_other_audio_is_refused(corpus, mfcc, tmp_path, capsys):
    fileid = sorted(mfcc)[1]
    cut = {**mfcc, fileid: mfcc[fileid][:-40]}  # 0.4 s short: features of other audio
    write_store(tmp_path / "store", cut.items(), dim=39, frame_rate_hz=100)
    argv = ["abx", str(corpus / "abx.item"), "--features", str(tmp_path / "store")]
    argv += ["--manifest", str(corpus / "manifest.csv"), "--out", str(tmp_path / "o")]
    _fails(capsys, argv, repr(fileid), "100 frames/s")


def test_abx_non_finite_npy_features_name_the_file(corpus, mfcc, tmp_path, capsys):
    fileid = sorted(mfcc)[2]
    broken = mfcc[fileid].copy()
    broken[len(broken) // 2, 3] = np.nan
    npy = _npy_folder(tmp_path / "npy", {**mfcc, fileid: broken})
    argv = ["abx", str(corpus / "abx.item"), "--features", str(npy), "--frame-shift", "0.01"]
    _fails(capsys, [*argv, "--out", str(tmp_path / "o")], str(npy), repr(fileid), "NaN or inf")
    assert not (tmp_path / "o" / "abx.json").exists()


def test_abx_model_with_nan_weights_is_refused(corpus, checkpoint, tmp_path, capsys):
    state = torch.load(checkpoint, weights_only=True)
    state["model"] = {k: v.float().fill_(float("nan")) for k, v in state["model"].items()}
    nan_ckpt = tmp_path / "nan.pt"
    torch.save(state, nan_ckpt)
    argv = ["abx", str(corpus / "abx.item"), "--manifest", str(corpus / "manifest.csv")]
    argv += ["--out", str(tmp_path / "o"), "--layers", "2"]
    _fails(capsys, [*argv, "--checkpoint", str(nan_ckpt)], str(nan_ckpt), "layer 2", "NaN or inf")
    _passes(capsys, [*argv, "--checkpoint", str(checkpoint)])


def test_abx_mfcc_of_non_finite_audio_is_refused(corpus, tmp_path, capsys):
    rows = list(csv.DictReader(open(corpus / "manifest.csv", encoding="utf-8")))
    wav = np.zeros(int(rows[0]["num_samples"]), np.float32)
    wav[1000:1100] = np.inf
    sf.write(tmp_path / "inf.wav", wav, 16000, subtype="FLOAT")
    rows[0]["path"] = str(tmp_path / "inf.wav")
    for row in rows[1:]:
        row["path"] = str(corpus / row["path"])
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    argv = ["abx", str(corpus / "abx.item"), "--manifest", str(manifest), "--mfcc"]
    _fails(capsys, [*argv, "--out", str(tmp_path / "o")], "inf.wav", "NaN or inf")


def test_abx_repeated_item_row_and_damaged_checkpoint(corpus, checkpoint, tmp_path, capsys):
    lines = (corpus / "abx.item").read_text().splitlines()
    item = tmp_path / "dup.item"
    item.write_text("\n".join([*lines, lines[5]]) + "\n")
    argv = ["abx", str(item), "--manifest", str(corpus / "manifest.csv"), "--mfcc"]
    _fails(capsys, [*argv, "--out", str(tmp_path / "o")], f"dup.item:{len(lines) + 1}:", "line 6")
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    argv = ["abx", str(corpus / "abx.item"), "--manifest", str(corpus / "manifest.csv")]
    argv += ["--checkpoint", str(truncated), "--out", str(tmp_path / "o")]
    _fails(capsys, argv, str(truncated), "truncated or corrupt")


# --- unit-quality ------------------------------------------------------------------------


def _units_folder(folder: Path, units: dict[str, np.ndarray], label_rate_hz: int = 50) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "units.jsonl", "w", encoding="utf-8") as f:
        for fileid, u in units.items():
            f.write(json.dumps({"fileid": fileid, "units": u.tolist()}) + "\n")
    (folder / "units.json").write_text(json.dumps({"k": 8, "label_rate_hz": label_rate_hz}))
    return folder


@pytest.fixture(scope="module")
def units(corpus) -> dict[str, np.ndarray]:
    """Units at 50 Hz, one per CNN frame, that follow the phones (so PNMI is high)."""
    from hubertlab.data.alignments import frame_phone_labels

    segments = read_phone_segments(corpus / "phones.jsonl")
    out = {}
    for row in read_manifest(corpus / "manifest.csv"):
        labels = frame_phone_labels(segments[row.fileid], num_frames(row.num_samples))
        # crc32, not hash(): str hashes change with every process (PYTHONHASHSEED).
        out[row.fileid] = np.array([zlib.crc32(p.encode()) % 8 for p in labels])
    return out


def test_unit_quality_units_at_twice_the_label_rate(corpus, units, tmp_path, capsys):
    phones, manifest = str(corpus / "phones.jsonl"), str(corpus / "manifest.csv")
    good = str(_units_folder(tmp_path / "good", units))
    assert json.loads(_passes(capsys, ["unit-quality", good, phones]))["pnmi"] > 0.5
    _passes(capsys, ["unit-quality", good, phones, "--manifest", manifest])
    doubled = str(_units_folder(tmp_path / "x2", {f: np.repeat(u, 2) for f, u in units.items()}))
    _fails(capsys, ["unit-quality", doubled, phones], "units.json label_rate_hz", "at 50 units/s")
    _fails(capsys, ["unit-quality", doubled, phones, "--manifest", manifest], "50 frames/s")
    # units.json claiming 100 Hz for 50 Hz units: the recorded rate is used, and contradicted.
    claimed = str(_units_folder(tmp_path / "claim", units, label_rate_hz=100))
    _fails(capsys, ["unit-quality", claimed, phones, "--manifest", manifest], "100 frames/s")


def test_unit_quality_wrong_count_for_one_file(corpus, units, tmp_path, capsys):
    fileid = sorted(units)[3]
    short = {**units, fileid: units[fileid][:-25]}
    folder = str(_units_folder(tmp_path / "u", short))
    phones, manifest = str(corpus / "phones.jsonl"), str(corpus / "manifest.csv")
    _fails(capsys, ["unit-quality", folder, phones], repr(fileid), "phones end at")
    _fails(capsys, ["unit-quality", folder, phones, "--manifest", manifest], repr(fileid))


def test_unit_quality_phones_of_other_audio(corpus, units, tmp_path, capsys):
    records = [json.loads(line) for line in (corpus / "phones.jsonl").read_text().splitlines()]
    records[0]["phones"].append([100.0, 101.0, "a"])
    phones = tmp_path / "phones.jsonl"
    phones.write_text("".join(json.dumps(r) + "\n" for r in records))
    folder = str(_units_folder(tmp_path / "u", units))
    argv = ["unit-quality", folder, str(phones), "--manifest", str(corpus / "manifest.csv")]
    _fails(capsys, argv, repr(records[0]["fileid"]), "past the end of its audio")


# --- manifest ----------------------------------------------------------------------------


def test_manifest_bad_arguments_and_rejected_files(tmp_path, capsys):
    src = tmp_path / "audio"
    write_tone(src / "spk" / "a.wav", 0.3)
    write_tone(src / "spk" / "a.flac", 0.3)
    write_tone(src / "spk" / "tab\tname.wav", 0.3)
    os.symlink(src, src / "spk" / "loop")
    out = tmp_path / "m.csv"
    _fails(capsys, ["manifest", str(tmp_path / "missing"), str(out)], "missing")
    _fails(capsys, ["manifest", str(src), str(tmp_path / "m.txt")], "m.txt")
    _fails(capsys, ["manifest", str(src), str(out), "--valid-fraction", "1.5"], "valid-fraction")
    printed = _passes(capsys, ["manifest", str(src), str(out)])
    assert "1 files ->" in printed and "3 files rejected" in printed
    report = (tmp_path / "m.csv.rejected.tsv").read_text(encoding="utf-8")
    assert "spk/a.wav\tsame fileid 'spk/a' as spk/a.flac, which was kept" in report
    assert "spk/tab\\tname.wav\t" in report and "spk/loop/\t" in report


# --- export ------------------------------------------------------------------------------


def test_export_damaged_or_unsafe_checkpoints(checkpoint, tmp_path, capsys):
    out = str(tmp_path / "out")
    data = checkpoint.read_bytes()
    for name, content in [("cut.pt", data[: len(data) // 2]), ("junk.pt", b"junk" * 100)]:
        (tmp_path / name).write_bytes(content)
        _fails(capsys, ["export", str(tmp_path / name), out], str(tmp_path / name), "corrupt")

    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo must never run",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": RunsCode()}, protocol=2))
    err = _fails(capsys, ["export", str(evil), out], str(evil), "refusing")
    assert "weights_only" not in err
    _fails(capsys, ["export", str(tmp_path / "none.pt"), out], "none.pt")
    assert not Path(out).exists()
    _passes(capsys, ["export", str(checkpoint), out, "--to", "hubertlab"])
